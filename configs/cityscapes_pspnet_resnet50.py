"""PSPNet-50 on Cityscapes (19 classes), hszhao/semseg `config/cityscapes/cityscapes_pspnet50.yaml`.

Deep-stem dilated ResNet-50 at output stride 8 (semseg's `resnet50_v2.pth` ImageNet weights,
`recipes.finetune`), PPM bins (1, 2, 3, 6) with PyTorch's adaptive pooling, aux head on res4
with weight 0.4; 713 x 713 crops, scale 0.5-2, flips, batch 16 (`batch_size_val` 8 is
semseg's evaluation batch), SGD lr 0.01 (head x10), momentum 0.9, weight decay 1e-4 on
every parameter (BN and biases too, `weight_decay_mask='all'`, as semseg's `tool/train.py`),
poly 0.9, 200 epochs of the 2,975 fine training images: semseg runs `max_iter = epochs *
len(train_loader)` with a DistributedSampler over 8 GPUs (372 images per GPU at batch 2,
`drop_last=True`: 186 iterations per epoch), i.e. 37,200 steps.

Deviations: semseg also rotates by -10..10 degrees and Gaussian-blurs, which this pipeline
does not do (lapseg/data has no rotation); its `tool/test.py` slides 713 x 713 windows
(`test_h`, `test_w`; `base_size: 2048`, the image's own long side) at stride ceil(713 x 2/3)
and averages each window's softmax with its flip's (`net_process(..., flip=True)`), where
lapseg's training-time evaluation runs whole 1024 x 2048 images once (`lapseg eval
--tile_size=713,713 --flip` is the closest protocol, docs/recipes.md).
Data: `--config.data.source_dir=DIR`, the Cityscapes root holding `leftImg8bit/`
and `gtFine/` (docs/datasets.md).
"""

from lapseg.train import recipes
from lapseg.train.recipes import PSPNET50


def get_config():
    return recipes.finetune(
        "pspnet", PSPNET50, dataset="cityscapes", crop_size=(713, 713), batch_size=16,
        eval_size=(1024, 2048), learning_rate=0.01, num_train_steps=37_200,
        loss_weights={"logits": 1.0, "aux": 0.4}, weight_decay_mask="all")
