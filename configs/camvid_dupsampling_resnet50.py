"""DUpsampling (Decoders Matter) with ResNet-50 at output stride 32 on CamVid (11 classes).

Fusion of res2/res3 at the OS-32 resolution (the paper's cheapest setting), L = 64 PCA
directions of the 32 x 32 x 11 label patches (W frozen, patch mean added, fitted by
`lapseg basis`, which sets `model_kwargs.basis_path`), adaptive temperature. SGD momentum
0.9, lr 0.007 (head x10), weight decay 1e-4, poly 0.9, 352 x 480 crops (multiples of 32),
scales 0.5-2, batch 8, 100 epochs (~4,600 steps).
"""

from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "dupsampling"
    config.model_kwargs = {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 32},
                           "ratio": 32, "dim": 64, "low_level_features": ("res2", "res3"),
                           "trainable_w": False, "add_mean": True}
    config.data.dataset = "camvid"
    config.data.crop_size = (352, 480)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = 8
    config.optimizer.learning_rate = 0.007
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.head_lr_multiplier = 10.0
    config.loss.weights = {"logits": 1.0}
    config.num_train_steps = 4600
    config.eval_every_steps = 460
    return config
