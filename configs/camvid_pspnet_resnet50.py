"""PSPNet-50 on CamVid (11 classes, 367 training images at 360 x 480).

The paper's recipe (semseg ADE20K/Cityscapes: deep-stem ResNet-50 at OS 8, PPM (1, 2, 3, 6),
aux weight 0.4, SGD lr 0.01 with head x10, momentum 0.9, weight decay 1e-4, poly 0.9)
on full-size 360 x 480 crops with scale 0.5-2, batch 8, 100 epochs (~4,600 steps).
Set `--config.data.source_dir` to a local CamVid copy (or leave it to download).
"""

from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "pspnet"
    config.model_kwargs = {"backbone": "resnet50",
                           "backbone_kwargs": {"deep_stem": True, "output_stride": 8},
                           "bins": (1, 2, 3, 6), "pooling": "adaptive", "dropout_rate": 0.1}
    config.data.dataset = "camvid"
    config.data.crop_size = (360, 480)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = 8
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.lr_power = 0.9
    config.optimizer.head_lr_multiplier = 10.0
    config.loss.weights = {"logits": 1.0, "aux": 0.4}
    config.num_train_steps = 4600
    config.eval_every_steps = 460
    return config
