"""GCN (Large Kernel Matters) with ResNet-101 on Cityscapes (19 classes).

GCN modules with k = 15 on res5..res2 of a standard ResNet-101 (OS 32), nine BRs, learned
x2 deconvolutions initialised bilinear (the paper's Fig. 2). Optimiser: the common
PyTorch-port recipe, SGD momentum 0.9, lr 0.01 (head x10), weight decay 5e-4, poly 0.9;
800 x 800 crops, scales 0.5-2, flips, batch 8. The paper's ResNet-152 / ResNet-GCN
encoders and its training schedule are not reproduced.
Prepare the data with `tfds build cityscapes/semantic_segmentation` (needs TF).
"""

from lapseg.train import recipes


def get_config():
    return recipes.finetune(
        "gcn", {"backbone": "resnet101", "backbone_kwargs": {"output_stride": 32},
                "kernel_size": 15, "upsampling": "deconv"},
        dataset="cityscapes", crop_size=(800, 800), batch_size=8, eval_size=(1024, 2048),
        learning_rate=0.01, weight_decay=5e-4, num_train_steps=90_000)
