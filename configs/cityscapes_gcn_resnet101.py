"""GCN (Large Kernel Matters) with ResNet-101 on Cityscapes (19 classes).

GCN modules with k = 25 on res5..res2 of a standard ResNet-101 (OS 32): k about the size of
the final feature map, 25 x 25 for 800 x 800 crops (`recipes.GCN_KERNEL_SIZE`; the paper's
Cityscapes k = 25 is not verified here), nine BRs, learned x2 deconvolutions initialised
bilinear. ResNet-101, not the ResNet-152 of ZijunDeng/pytorch-semantic-segmentation
`models/gcn.py`, at 0.73x its forward FLOPs (246.7 against 340.2 GFLOPs per 800 x 800 crop,
docs/recipes.md); `--config.model_kwargs.backbone=resnet152
--config.init.backbone_weights=hf://timm/resnet152.tv_in1k` trains the port's backbone.
Optimiser: the shared fine-tuning recipe, hszhao/semseg's (`tool/train.py`; no GCN training
recipe was found to follow), SGD momentum 0.9, lr 0.01 (head x10), weight decay 1e-4 on
every parameter, poly 0.9; 800 x 800 crops, scales 0.5-2, flips, batch 8, 90,000 steps.
Data: `--config.data.source_dir=DIR`, the Cityscapes root holding `leftImg8bit/`
and `gtFine/` (docs/datasets.md).
"""

from lapseg.train import recipes


def get_config():
    return recipes.finetune(
        "gcn", {"backbone": "resnet101", "backbone_kwargs": {"output_stride": 32},
                "kernel_size": recipes.GCN_KERNEL_SIZE["cityscapes"], "upsampling": "deconv"},
        dataset="cityscapes", crop_size=(800, 800), batch_size=8, eval_size=(1024, 2048),
        learning_rate=0.01, num_train_steps=90_000, weight_decay_mask="all")
