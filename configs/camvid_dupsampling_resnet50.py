"""DUpsampling (Decoders Matter) with ResNet-50 at output stride 32 on CamVid (11 classes).

Fusion of the stem (conv1, stride 2) and res4 with res5 at the OS-32 resolution (the
paper's cheapest setting; the low-level pair of haochange/DUpsampling `models/dunet.py`,
`x_13` + `x_46`, see `lapseg/decoders/dupsampling.py`), L = 64 PCA directions of the
32 x 32 x 11 label patches (W frozen, patch mean added, fitted by
`lapseg basis` or by `lapseg train` before step 0), adaptive temperature. SGD momentum
0.9, lr 0.007 (head x10), weight decay 1e-4, poly 0.9, 352 x 480 crops (multiples of 32),
scales 0.5-2, batch 8, 100 epochs (~4,600 steps).
"""

from lapseg.train import recipes


def get_config():
    return recipes.finetune(
        "dupsampling",
        {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 32}, "ratio": 32,
         "dim": 64, "features": ("res5", "stem", "res4"), "trainable_w": False,
         "add_mean": True},
        dataset="camvid", crop_size=(352, 480), batch_size=8, learning_rate=0.007,
        num_train_steps=4600)
