"""GCN (Large Kernel Matters) with ResNet-50 on CamVid (11 classes, 360 x 480).

GCN k = 15 on res5..res2 of a standard ResNet-50 (OS 32): k about the size of the final
feature map (`recipes.GCN_KERNEL_SIZE`; 12 x 15 for CamVid), nine BRs, learned x2 deconvs
initialised bilinear. ResNet-50, not the ResNet-152 of ZijunDeng/pytorch-semantic-segmentation
`models/gcn.py` (`models.resnet152()`), at 0.39x its forward FLOPs (32.7 against 83.5 GFLOPs
per 360 x 480 image, docs/recipes.md); `--config.model_kwargs.backbone=resnet152
--config.init.backbone_weights=hf://timm/resnet152.tv_in1k` trains the port's backbone.
No GCN training recipe was found to follow (the paper's is not verified here, and ZijunDeng's
repository has no GCN training script), so the optimiser is the shared fine-tuning recipe,
hszhao/semseg's (`tool/train.py`): SGD momentum 0.9, lr 0.01 (head x10), weight decay 1e-4
on every parameter, poly 0.9; full-size 360 x 480 crops with scales 0.5-2, flips, batch 8,
100 epochs (~4,600 steps).
"""

from lapseg.train import recipes


def get_config():
    return recipes.finetune(
        "gcn", {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 32},
                "kernel_size": recipes.GCN_KERNEL_SIZE["camvid"], "upsampling": "deconv"},
        dataset="camvid", crop_size=(360, 480), batch_size=8, learning_rate=0.01,
        num_train_steps=4600, weight_decay_mask="all")
