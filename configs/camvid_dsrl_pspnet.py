"""DSRL (Wang et al., CVPR 2020) around PSPNet-50 on CamVid (11 classes, 360 x 480).

The network sees 180 x 240 and predicts at 360 x 480; the SISR branch reconstructs the
360 x 480 image. Whole-image crops after random scaling (0.5-2) and flips, batch 8,
SGD poly 0.9, lr 0.01 (head x10), about 200 epochs of the 367 training images.
Loss `L_ce + 0.4 L_aux + 0.1 L_mse + 1.0 L_fa` (FA on 1/8-subsampled maps, 45 x 60 pixels).
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

    config.data.dataset = "camvid"
    config.data.crop_size = (360, 480)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = 8
    config.data.eval_size = (360, 480)

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
    config.num_train_steps = 9200
    return config
