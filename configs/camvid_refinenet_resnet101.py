"""RefineNet-101 on CamVid (11 classes, 360 x 480), guosheng/refinenet's recipe.

Decoder as `cityscapes_refinenet_resnet101.py`, input enlarged x1.2 before the ResNet
(`input_scale`, the reference's `gen_featnet_config_resnet_custom(..., 1.2, 4, 1)`), loss on
the 1/4-resolution scores; optimiser as the original (SGD momentum 0.9, weight decay 5e-4,
head lr 5e-4, ResNet at 0.1x), crops 360 x 480 (the original's 400 crop, capped by CamVid's
height), scales 0.7-1.3, flips, batch 8, poly decay over 4,600 steps (100 epochs).
Deviations as in the Cityscapes config: batch 8 at the batch-1 per-step rates with poly
decay instead of the manual drop to 5e-5, and uniform instead of class-sampled crops and
images (docs/recipes.md).
"""

from lapseg.train import recipes
from lapseg.train.recipes import REFINENET101


def get_config():
    return recipes.finetune(
        "refinenet", REFINENET101, dataset="camvid", crop_size=(360, 480), batch_size=8,
        scale_range=(0.7, 1.3), learning_rate=5e-5, weight_decay=5e-4, num_train_steps=4600,
        loss_weights={"coarse_logits": 1.0})
