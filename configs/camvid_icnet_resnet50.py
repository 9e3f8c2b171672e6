"""ICNet (Zhao et al., ECCV 2018) on CamVid (11 classes), at 360 x 480 or 720 x 960.

`--config=configs/camvid_icnet_resnet50.py` trains on the 360 x 480 SegNet copy of CamVid
(lapseg's `camvid` dataset); `--config=configs/camvid_icnet_resnet50.py:720x960` is CamVid's
original resolution (the paper's CamVid size, not verified here), which needs CamVid at its
original 720 x 960 in the same directory layout (`--config.data.source_dir=...`, and a
data_dir of its own).

Network as the Cityscapes model (half-width deep-stem ResNet-50 at output stride 8, CFF
128), but the pyramid pools with adaptive bins: the prototxt's fixed Caffe kernels are
sized for a 32 x 64 conv5_3, while CamVid gives 12 x 15 (360 x 480) or 23 x 30 (720 x 960).
Recipe: SGD momentum 0.9, lr 0.01 poly 0.9, weight decay 1e-4 on kernels, random mirror and
resize 0.5-2, batch 16 (8 at 720 x 960) (attributed to the paper's Sec. 5, not verified
here; hellochick/ICNet-tensorflow fine-tunes with `MOMENTUM = 0.9`, `POWER = 0.9`,
`WEIGHT_DECAY = 0.0001` on `'weights'` only, batch 8, lr 5e-4); 100 epochs of the 367
training images (2,293 steps at batch 16, 4,587 at batch 8), the length of the other CamVid
configs (a CamVid length of 10K iterations is attributed to the paper, not verified:
`--config.num_train_steps=10000`). Cascade label guidance `0.4 L_sub4 + 0.4 L_sub24 + 1.0
L_sub124`, each branch at its own resolution (`recipes.ICNET_LOSS_WEIGHTS`: not verified in
the paper, see there). Initialisation: `--config.init.checkpoint=RUN`, a PSPNet run with this
backbone's shape, as in `cityscapes_icnet_resnet50.py`; unset, from scratch (no ImageNet
weights exist for the half-width backbone).
"""

from lapseg.train import recipes
from lapseg.train.recipes import ICNET50

SIZES = {"360x480": ((360, 480), 16), "720x960": ((720, 960), 8)}  # size, batch


def get_config(size: str = "360x480"):
    if size not in SIZES:
        raise ValueError(f"camvid_icnet_resnet50: size must be one of {sorted(SIZES)}, got {size!r}")
    (height, width), batch_size = SIZES[size]
    # No pretrained half-width backbone: one learning rate for every parameter.
    config = recipes.finetune(
        "icnet", {**ICNET50, "pooling": "adaptive"}, dataset="camvid", crop_size=(height, width),
        batch_size=batch_size, eval_size=(height, width), learning_rate=0.01,
        num_train_steps=100 * 367 // batch_size, loss_weights=recipes.ICNET_LOSS_WEIGHTS,
        lr_multipliers=(), pretrained=False)
    return config
