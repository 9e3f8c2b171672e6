"""PSPNet-50 on CamVid (11 classes, 367 training images at 360 x 480).

The paper's recipe (semseg ADE20K/Cityscapes: deep-stem ResNet-50 at OS 8, PPM (1, 2, 3, 6),
aux weight 0.4, SGD lr 0.01 with head x10, momentum 0.9, weight decay 1e-4 on every
parameter, poly 0.9)
on full-size 360 x 480 crops with scale 0.5-2, batch 8, 100 epochs (~4,600 steps).
Set `--config.data.source_dir` to a local CamVid copy (or leave it to download).
"""

from lapseg.train import recipes
from lapseg.train.recipes import PSPNET50


def get_config():
    return recipes.finetune(
        "pspnet", PSPNET50, dataset="camvid", crop_size=(360, 480), batch_size=8,
        learning_rate=0.01, num_train_steps=4600, loss_weights={"logits": 1.0, "aux": 0.4},
        weight_decay_mask="all")
