"""DSRL (Wang et al., CVPR 2020) around PSPNet-50 on Cityscapes.

The paper's Cityscapes setting: the network sees the image downsampled x2 and predicts at
the original resolution; evaluation at 1024 x 2048 (the network runs at 512 x 1024).
Training crops of 512 x 1024 (network input 256 x 512) keep the feature-affinity matrices
small: 64 x 128 pixels after the 1/8 subsampling, two `[N, 8192, 8192]` f32 matrices per
step (256 MiB per image each); full 1024 x 2048 crops would need 4 GiB per image each.

Base: PSPNet on the deep-stem dilated ResNet-50 (output stride 8), auxiliary head 0.4,
SGD poly 0.9, lr 0.01 (head x10), weight decay 1e-4. Loss `L_ce + 0.1 L_mse + 1.0 L_fa`.
The paper's own bases were DeepLabv3+ and ESPNet; lapseg's DSRL wraps any decoder
(`model_kwargs.base`).
"""

from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "dsrl"
    config.model_kwargs = {
        "base": "pspnet",
        "backbone": "resnet50",
        "backbone_kwargs": {"deep_stem": True, "output_stride": 8},
        "base_kwargs": {},
        "sisr_features": ("res2", "res5"),
        "sisr_channels": 64,
        "espcn_features": (64, 32),
    }

    config.data.dataset = "cityscapes"
    config.data.crop_size = (512, 1024)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = 8
    config.data.eval_size = (1024, 2048)

    config.optimizer.learning_rate = 0.01
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.head_lr_multiplier = 10.0

    config.loss.weights = {"logits": 1.0, "aux": 0.4}
    config.loss.mse_weight = 0.1
    config.loss.fa_weight = 1.0
    config.loss.fa_subsample = 8
    config.loss.fa_p = 2.0
    config.loss.fa_q = 1.0
    config.num_train_steps = 90000
    return config
