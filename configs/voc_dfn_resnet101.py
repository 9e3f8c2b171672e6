"""DFN (Discriminative Feature Network, Yu et al., CVPR 2018) on a deep-stem ResNet-101, PASCAL VOC 2012.

The authors' recipe, ycszen/TorchSeg `model/dfn/voc.dfn.R101_v1c/config.py` and `train.py`:
SGD momentum 0.9, lr 8e-4 with the decoder at 10x (`base_lr * 10` for `business_layer`),
poly 0.9 (`C.lr_power`), weight decay 1e-5 on conv and linear kernels only (`group_weight`:
BN and biases at `weight_decay=.0`), batch 32, 512 x 512 crops, flips, 120 epochs of
`C.niters_per_epoch = int(math.ceil(10582 * 1.0 // 32))` = 330 steps: 39,600 steps. Loss:
CE on the four smooth heads + 0.1 x the border focal loss (`recipes.DFN_LOSS_WEIGHTS`,
`recipes.DFN_BORDER_LOSS`; lapseg/losses/dfn.py lists its deviations).
Deviations: random scales uniform in [0.5, 2] (the reference picks one of
{0.5, 0.75, 1, 1.5, 1.75, 2}, `C.train_scale_array`; lapseg's augmentation draws a range);
weights `resnet101_deep_stem`.npz (semseg's `resnet101_v2.pth`, the same architecture as
TorchSeg's `resnet101_v1c.pth`, whose stem keys `conv1.{0,1,3,4,6}` lapseg's converter does not
name; docs/recipes.md).
Data: trains on VOC + SBD `train_aug` (the reference's 10,582 `train.txt` images) and evaluates
on VOC `val`: `--config.data.source_dir=.../VOCdevkit/VOC2012
--config.data.sbd_dir=.../benchmark_RELEASE` (docs/datasets.md).
"""

from lapseg.train import recipes

TRAIN_AUG_IMAGES, BATCH_SIZE, EPOCHS = 10_582, 32, 120


def get_config():
    config = recipes.dfn101(
        dataset="voc", crop_size=(512, 512), batch_size=BATCH_SIZE, learning_rate=8e-4,
        weight_decay=1e-5, num_train_steps=EPOCHS * (TRAIN_AUG_IMAGES // BATCH_SIZE))
    config.data.train_split = "train_aug"
    return config
