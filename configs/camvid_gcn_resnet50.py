"""GCN (Large Kernel Matters) with ResNet-50 on CamVid (11 classes, 360 x 480).

GCN k = 15 on res5..res2 of a standard ResNet-50 (OS 32), nine BRs, learned x2 deconvs
initialised bilinear; SGD momentum 0.9, lr 0.01 (head x10), weight decay 5e-4, poly 0.9,
full-size 360 x 480 crops with scales 0.5-2, batch 8, 100 epochs (~4,600 steps).
"""

from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "gcn"
    config.model_kwargs = {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 32},
                           "kernel_size": 15, "upsampling": "deconv"}
    config.data.dataset = "camvid"
    config.data.crop_size = (360, 480)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = 8
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.head_lr_multiplier = 10.0
    config.loss.weights = {"logits": 1.0}
    config.num_train_steps = 4600
    config.eval_every_steps = 460
    return config
