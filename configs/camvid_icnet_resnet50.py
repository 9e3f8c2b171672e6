"""ICNet (Zhao et al., ECCV 2018) on CamVid (11 classes), at 360 x 480 or 720 x 960.

`--config=configs/camvid_icnet_resnet50.py` trains on the 360 x 480 SegNet copy of CamVid
(lapseg's `camvid` dataset); `--config=configs/camvid_icnet_resnet50.py:720x960` is the
paper's CamVid resolution, which needs CamVid at its original 720 x 960 in the same
directory layout (`--config.data.source_dir=...`, and a data_dir of its own).

Network as the Cityscapes model (half-width deep-stem ResNet-50 at output stride 8, CFF
128), but the pyramid pools with adaptive bins: the prototxt's fixed Caffe kernels are
sized for a 32 x 64 conv5_3, while CamVid gives 12 x 15 (360 x 480) or 23 x 30 (720 x 960).
Recipe of the paper (Sec. 5): SGD momentum 0.9, lr 0.01 poly 0.9, weight decay 1e-4,
random mirror and resize 0.5-2; about 200 epochs of the 367 training images. Cascade label
guidance `0.16 L_sub4 + 0.4 L_sub24 + 1.0 L_sub124`.
"""

from lapseg.train.config import base_config

SIZES = {"360x480": ((360, 480), 16), "720x960": ((720, 960), 8)}  # size, batch


def get_config(size: str = "360x480"):
    if size not in SIZES:
        raise ValueError(f"camvid_icnet_resnet50: size must be one of {sorted(SIZES)}, got {size!r}")
    (height, width), batch_size = SIZES[size]
    config = base_config()
    config.model = "icnet"
    config.model_kwargs = {
        "backbone": "resnet50",
        "backbone_kwargs": {"deep_stem": True, "output_stride": 8, "width": 0.5},
        "branch_features": 128,
        "head_features": 256,
        "bins": (1, 2, 3, 6),
        "pooling": "adaptive",
    }

    config.data.dataset = "camvid"
    config.data.crop_size = (height, width)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = batch_size
    config.data.eval_size = (height, width)

    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.lr_power = 0.9
    config.optimizer.head_lr_multiplier = 1.0  # no pretrained half-width backbone: one rate

    config.loss.weights = {"aux_sub4": 0.16, "aux_sub24": 0.4, "logits": 1.0}
    config.num_train_steps = 200 * 367 // batch_size
    return config
