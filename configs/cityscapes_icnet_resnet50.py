"""ICNet (Zhao et al., ECCV 2018) on Cityscapes at full resolution, 1024 x 2048.

The network of hszhao/ICNet `icnet_cityscapes_bnnomerge.prototxt`: half-width deep-stem
ResNet-50 (32..1024 channels) at output stride 8, the summed pyramid with the prototxt's
Caffe pooling kernels (valid for the 32 x 64 conv5_3 of a 1024 x 2048 input, hence
full-size crops), CFF width 128. Paper Sec. 5 recipe: batch 16, SGD momentum 0.9, lr 0.01
poly 0.9, weight decay 1e-4, 30K iterations, random mirror and resize 0.5-2. Cascade label
guidance `0.16 L_sub4 + 0.4 L_sub24 + 1.0 L_sub124` (labels resized by nearest).

The released model was pruned from a trained PSPNet-50; there is no ImageNet checkpoint of
the half-width ResNet-50, so this trains it from the initialisation lapseg gives it.
"""

from lapseg.decoders.icnet import CITYSCAPES_POOLING
from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "icnet"
    config.model_kwargs = {
        "backbone": "resnet50",
        "backbone_kwargs": {"deep_stem": True, "output_stride": 8, "width": 0.5},
        "branch_features": 128,
        "head_features": 256,
        "bins": (1, 2, 3, 6),
        "pooling": "fixed",
        **CITYSCAPES_POOLING,
    }

    config.data.dataset = "cityscapes"
    config.data.crop_size = (1024, 2048)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = 16
    config.data.eval_size = (1024, 2048)

    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.lr_power = 0.9
    config.optimizer.head_lr_multiplier = 1.0

    config.loss.weights = {"aux_sub4": 0.16, "aux_sub24": 0.4, "logits": 1.0}
    config.num_train_steps = 30000
    return config
