"""RefineNet-101 on Cityscapes (19 classes), guosheng/refinenet's training recipe.

4-cascaded RefineNet on a standard ResNet-101 (OS 32), adapt widths 512/256/256/256,
2 adapt RCUs, 4-stage CRP (pool then conv), 3 output RCUs; loss on the 1/4-resolution
scores against nearest-resized labels (`coarse_logits`, as `cnn_layer_dense_softmaxloss`).
Optimiser as `gen_net_opts_model_type*.m`: SGD momentum 0.9, weight decay 5e-4, head lr
5e-4 with the ResNet at 0.1x (here: base lr 5e-5, head x10), crops 600 x 600 for
Cityscapes (`demo_refinenet_train.m`), scales 0.7-1.3, flips. Deviations: the original
trains with batch 1 at a fixed rate, lowered by hand; here batch 8 and poly decay over
90,000 steps. Prepare the data with `tfds build cityscapes/semantic_segmentation` (needs TF).
"""

from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "refinenet"
    config.model_kwargs = {"backbone": "resnet101", "backbone_kwargs": {"output_stride": 32},
                           "widths": (512, 256, 256, 256), "crp_stages": 4, "crp_order": "pool_conv"}
    config.data.dataset = "cityscapes"
    config.data.crop_size = (600, 600)
    config.data.scale_range = (0.7, 1.3)
    config.data.batch_size = 8
    config.data.eval_size = (1024, 2048)
    config.optimizer.learning_rate = 5e-5
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.head_lr_multiplier = 10.0
    config.loss.weights = {"coarse_logits": 1.0}
    config.num_train_steps = 90_000
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
