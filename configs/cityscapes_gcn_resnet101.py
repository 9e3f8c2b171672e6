"""GCN (Large Kernel Matters) with ResNet-101 on Cityscapes (19 classes).

GCN modules with k = 25 on res5..res2 of a standard ResNet-101 (OS 32): the paper's
Cityscapes choice (Sec. 4.3: with 800 x 800 crops the final feature map is 25 x 25, so k
goes from VOC's 15 to 25; `recipes.GCN_KERNEL_SIZE`), nine BRs, learned x2 deconvolutions
initialised bilinear (the paper's Fig. 2). Optimiser: the common PyTorch-port recipe, SGD
momentum 0.9, lr 0.01 (head x10), weight decay 5e-4, poly 0.9; 800 x 800 crops, scales
0.5-2, flips, batch 8. The paper's ResNet-152 / ResNet-GCN encoders and its training
schedule are not reproduced.
Data: `--config.data.source_dir=DIR`, the Cityscapes root holding `leftImg8bit/`
and `gtFine/` (README: Datasets).
"""

from lapseg.train import recipes


def get_config():
    return recipes.finetune(
        "gcn", {"backbone": "resnet101", "backbone_kwargs": {"output_stride": 32},
                "kernel_size": recipes.GCN_KERNEL_SIZE["cityscapes"], "upsampling": "deconv"},
        dataset="cityscapes", crop_size=(800, 800), batch_size=8, eval_size=(1024, 2048),
        learning_rate=0.01, weight_decay=5e-4, num_train_steps=90_000)
