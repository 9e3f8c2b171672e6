"""RefineNet-101 on CamVid (11 classes, 360 x 480), guosheng/refinenet's recipe.

Decoder as `cityscapes_refinenet_resnet101.py` (loss on the 1/4-resolution scores);
optimiser as the original (SGD momentum 0.9, weight decay 5e-4, head lr 5e-4, ResNet at
0.1x), crops 360 x 480 (the original's 400 crop, capped by CamVid's height), scales
0.7-1.3, flips, batch 8, poly decay over 4,600 steps (100 epochs).
"""

from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "refinenet"
    config.model_kwargs = {"backbone": "resnet101", "backbone_kwargs": {"output_stride": 32},
                           "widths": (512, 256, 256, 256), "crp_stages": 4, "crp_order": "pool_conv"}
    config.data.dataset = "camvid"
    config.data.crop_size = (360, 480)
    config.data.scale_range = (0.7, 1.3)
    config.data.batch_size = 8
    config.optimizer.learning_rate = 5e-5
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.head_lr_multiplier = 10.0
    config.loss.weights = {"coarse_logits": 1.0}
    config.num_train_steps = 4600
    config.eval_every_steps = 460
    return config
