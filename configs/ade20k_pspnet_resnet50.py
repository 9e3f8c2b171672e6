"""PSPNet-50 on ADE20K (150 classes), hszhao/semseg `config/ade20k/ade20k_pspnet50.yaml`.

Deep-stem dilated ResNet-50 at output stride 8, PPM bins (1, 2, 3, 6) with PyTorch's
adaptive pooling (not the Caffe release's fixed kernels), aux head on res4 with weight
0.4; 473 x 473 crops, scale 0.5-2, batch 16, SGD lr 0.01 (head x10), momentum 0.9,
weight decay 1e-4 on every parameter (semseg's `torch.optim.SGD(params_list, ...,
weight_decay=args.weight_decay)` holds BN and bias parameters too: `weight_decay_mask='all'`),
poly 0.9, 100 epochs of 20,210 images: semseg's `max_iter = epochs *
len(train_loader)` with a DistributedSampler over 8 GPUs (2,527 images per GPU at batch 2,
`drop_last=True`: 1,263 iterations per epoch), i.e. 126,300 steps. semseg also rotates by
-10..10 degrees and blurs; this pipeline does not (lapseg/data has no rotation).
semseg's test protocol (`tool/test.py`) resizes each image's long side to 512 (`base_size`),
slides 473 x 473 windows and averages each window with its flip; lapseg's training-time
evaluation scores whole images (docs/recipes.md).
Data: `--config.data.source_dir=DIR`, the `ADEChallengeData2016` folder (docs/datasets.md).
"""

from lapseg.train import recipes
from lapseg.train.recipes import PSPNET50


def get_config():
    return recipes.finetune(
        "pspnet", PSPNET50, dataset="ade20k", crop_size=(473, 473), batch_size=16,
        learning_rate=0.01, num_train_steps=126_300, loss_weights={"logits": 1.0, "aux": 0.4},
        weight_decay_mask="all")
