"""DFN (Discriminative Feature Network, Yu et al., CVPR 2018) on a deep-stem ResNet-101, Cityscapes (19 classes).

The authors' recipe, ycszen/TorchSeg `model/dfn/cityscapes.dfn.R101_v1c/config.py` and
`train.py` (plain cross-entropy: the OHEM criterion there is commented out): SGD momentum 0.9,
lr 7e-4 with the decoder at 10x, poly 0.9, weight decay 1e-4 on conv and linear kernels only,
batch 16, 800 x 800 crops, flips, 80 epochs of `C.niters_per_epoch = 1000`: 80,000 steps.
Loss: CE on the four smooth heads + 0.1 x the border focal loss (lapseg/losses/dfn.py).
Deviations: random scales uniform in [0.5, 2] (the reference picks one of
{0.5, 0.75, 1, 1.5, 1.75, 2}); weights `resnet101_deep_stem`.npz (docs/recipes.md); lapseg's
training-time evaluation runs whole 1024 x 2048 images (the reference slides 800 x 800
windows, `C.eval_crop_size`, stride rate 2/3: `lapseg eval --tile_size=800,800` is the closest).
Data: `--config.data.source_dir=DIR`, the Cityscapes root holding `leftImg8bit/` and `gtFine/`
(docs/datasets.md).
"""

from lapseg.train import recipes


def get_config():
    return recipes.dfn101(
        dataset="cityscapes", crop_size=(800, 800), batch_size=16, learning_rate=7e-4,
        weight_decay=1e-4, num_train_steps=80_000, eval_size=(1024, 2048))
