"""The config schema: every field the training system reads, with defaults.

Experiment configs (`configs/*.py`) start from `base_config()` and change a few fields:

    from lapseg.train.config import base_config

    def base_config():
        config = base_config()
        config.model = 'pspnet'
        ...
        return config

Override any field on the command line, e.g. `--config.data.batch_size=16`; a
misspelt field is an error naming it (the config is locked).
"""

import ml_collections
from ml_collections.config_dict import placeholder


def base_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: `lapseg.models.create_model(config.model, num_classes=..., **config.model_kwargs)`.
    # The default job must reach >= 0.85 val mIoU on `shapes` in < 10 min on a 2-core CPU,
    # from scratch. FCN-8s on a quarter-width ResNet-18 does: `lapseg train` reached 0.859
    # after these 6500 steps, in 7 min 27 s with the dataset build (~16 steps/s). LRR on the
    # same backbone learns more slowly per second (its coefficient convs need a ~300x smaller
    # learning rate, see lapseg/decoders/lrr.py, and its step costs 2.5x FCN's):
    # configs/shapes_lrr.py, 0.669 after 2000 steps in 6 min.
    config.model = "fcn8s"
    config.model_kwargs = ml_collections.ConfigDict(
        {"backbone": "resnet18", "backbone_kwargs": {"output_stride": 32, "width": 0.25}})
    config.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (params stay f32)
    # LRR bases / DUpsampling matrix: fitted from the training labels before training
    # (`lapseg basis`), written to `<workdir>/basis.npz` unless a path is given.
    config.basis = ml_collections.ConfigDict({"path": "", "num_batches": 20})

    # Data (`lapseg.data.create_loader(config.data, ...)`).
    config.data = ml_collections.ConfigDict()
    config.data.dataset = "shapes"
    config.data.data_dir = placeholder(str)    # tfds data dir; None = ~/tensorflow_datasets
    config.data.source_dir = placeholder(str)  # camvid: local raw directory (None: download)
    config.data.crop_size = (96, 96)
    config.data.scale_range = (0.75, 1.5)
    config.data.flip = True
    config.data.normalize = "torch"
    config.data.batch_size = 16         # global batch, split over devices and hosts
    config.data.eval_size = placeholder(tuple)  # None: image size rounded up to 32
    config.data.worker_count = 0
    config.data.prefetch = 2
    config.data.num_threads = 2
    config.data.num_epochs = placeholder(int)  # None: repeat forever

    # Optimiser (`lapseg.train.optim`): SGD momentum, poly 0.9 with warm-up.
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 0.1  # from scratch with BN (shapes: 0.1 > 0.05 > 0.02)
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 50
    config.optimizer.lr_power = 0.9
    # Non-backbone parameters train at `head_lr_multiplier` x the rate (PSPNet/DUpsampling
    # recipes: 10 for a new head on a pretrained backbone; LRR: well below 1).
    config.optimizer.head_lr_multiplier = 1.0
    config.optimizer.backbone_prefixes = ("backbone",)

    # Loss (`lapseg.losses.for_model`): output key -> weight (LRR: 'level_32' ... 'level_4').
    config.loss = ml_collections.ConfigDict()
    config.loss.weights = {"logits": 1.0}
    config.loss.class_weights = placeholder(tuple)

    config.num_train_steps = 6500
    config.log_every_steps = 50
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    config.distributed = False  # call jax.distributed.initialize() (multi-host)
    return config


# `--config lapseg/train/config.py` (the CLI's default) loads the embedded default job.
get_config = base_config
