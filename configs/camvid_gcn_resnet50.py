"""GCN (Large Kernel Matters) with ResNet-50 on CamVid (11 classes, 360 x 480).

GCN k = 15 on res5..res2 of a standard ResNet-50 (OS 32): the paper's rule, k about the
size of the final feature map (VOC 512 x 512: 16 x 16, k = 15; Cityscapes 800 x 800: 25 x 25,
k = 25), gives 15 for CamVid's 12 x 15 res5 (`recipes.GCN_KERNEL_SIZE`); nine BRs, learned
x2 deconvs initialised bilinear; SGD momentum 0.9, lr 0.01 (head x10), weight decay 5e-4,
poly 0.9, full-size 360 x 480 crops with scales 0.5-2, batch 8, 100 epochs (~4,600 steps).
"""

from lapseg.train import recipes


def get_config():
    return recipes.finetune(
        "gcn", {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 32},
                "kernel_size": recipes.GCN_KERNEL_SIZE["camvid"], "upsampling": "deconv"},
        dataset="camvid", crop_size=(360, 480), batch_size=8, learning_rate=0.01,
        weight_decay=5e-4, num_train_steps=4600)
