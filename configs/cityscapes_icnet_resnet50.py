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
from lapseg.train import recipes
from lapseg.train.recipes import ICNET50


def get_config():
    return recipes.finetune(
        "icnet", {**ICNET50, "pooling": "fixed", **CITYSCAPES_POOLING}, dataset="cityscapes",
        crop_size=(1024, 2048), batch_size=16, eval_size=(1024, 2048), learning_rate=0.01,
        num_train_steps=30000, loss_weights=recipes.ICNET_LOSS_WEIGHTS, lr_multipliers=(), pretrained=False)
