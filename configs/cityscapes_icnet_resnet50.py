"""ICNet (Zhao et al., ECCV 2018) on Cityscapes at full resolution, 1024 x 2048.

The network of hszhao/ICNet `icnet_cityscapes_bnnomerge.prototxt`: half-width deep-stem
ResNet-50 (32..1024 channels) at output stride 8, the summed pyramid with the prototxt's
Caffe pooling kernels (valid for the 32 x 64 conv5_3 of a 1024 x 2048 input, hence
full-size crops), CFF width 128. 30K iterations, as the released model
(hszhao/ICNet README: `icnet_cityscapes_train_30k.caffemodel`, "train on trainset for 30k").
Batch 16, SGD momentum 0.9, lr 0.01 poly 0.9, weight decay 1e-4 on kernels, random mirror
and resize 0.5-2: attributed to the paper's Sec. 5, not verified here (hszhao/ICNet holds no
training solver; hellochick/ICNet-tensorflow fine-tunes the released model with
`MOMENTUM = 0.9`, `POWER = 0.9`, `WEIGHT_DECAY = 0.0001` on `'weights'` only,
`TRAINING_SIZE = [720, 720]`, and `train.py`'s `BATCH_SIZE = 8`, `LEARNING_RATE = 5e-4`).
Cascade label guidance `0.4 L_sub4 + 0.4 L_sub24 + 1.0 L_sub124` (not verified in the paper;
mmsegmentation's ICNet has 0.4 / 0.4 / 1.0, hellochick 0.16 / 0.4 / 1.0), each branch
scored at its own resolution (1/16, 1/8 and the 1/4 `conv6_cls` map; labels resized by
nearest); the final x4 upsampling runs at test time only (`recipes.ICNET_LOSS_WEIGHTS`).

Initialisation: ICNet is "compressed-PSPNet-based" (the arXiv v1 abstract; hellochick's
README: the authors "trained the model in full kernels and then performed model-pruning
techique to kill half kernels"), so it starts from a trained PSPNet. `--config.init.checkpoint=RUN`
names a PSPNet run whose backbone has
this config's shape (`lapseg train --config configs/cityscapes_pspnet_resnet50.py
--config.model_kwargs.backbone_kwargs.width=0.5 --config.init.backbone_weights=''`: the
full-width ImageNet weights do not fit a half-width backbone; or a full-width PSPNet-50 with
`--config.model_kwargs.backbone_kwargs.width=1.0` here, the paper's network before its
compression). Unset, ICNet trains from lapseg's initialisation. There is no ImageNet
checkpoint of the half-width ResNet-50, so `backbone_weights` stays unset.
"""

from lapseg.decoders.icnet import CITYSCAPES_POOLING
from lapseg.train import recipes
from lapseg.train.recipes import ICNET50


def get_config():
    config = recipes.finetune(
        "icnet", {**ICNET50, "pooling": "fixed", **CITYSCAPES_POOLING}, dataset="cityscapes",
        crop_size=(1024, 2048), batch_size=16, eval_size=(1024, 2048), learning_rate=0.01,
        num_train_steps=30000, loss_weights=recipes.ICNET_LOSS_WEIGHTS, lr_multipliers=(),
        pretrained=False)
    return config
