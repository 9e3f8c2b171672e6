"""DUpsampling (Decoders Matter) with ResNet-50 at output stride 16 on Cityscapes (19 classes).

The paper trains on PASCAL VOC / Pascal Context, which this library's catalog lacks;
Cityscapes is the closest catalogued benchmark. Decoder as the paper: the stem (conv1,
stride 2) and res4 bilinearly resized to res5 (OS 16; the low-level pair `x_13` + `x_46`
of haochange/DUpsampling `models/dunet.py`, see `lapseg/decoders/dupsampling.py`), 1x1
convs to 48, two 3x3 convs 256, a 1x1 projection to L = 256 and DUpsample with the PCA
matrix W (ratio 16, frozen) plus the patch mean, adaptive temperature. W is fitted from the training labels by `lapseg basis` before
training (or by `lapseg train` before step 0). SGD momentum 0.9, lr 0.007 (head x10),
weight decay 1e-4, poly 0.9, 768 x 768 crops, scales 0.5-2, batch 8, 90,000 steps.
Data: `--config.data.source_dir=DIR`, the Cityscapes root holding `leftImg8bit/`
and `gtFine/` (README: Datasets).
"""

from lapseg.train import recipes


def get_config():
    config = recipes.finetune(
        "dupsampling",
        {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 16}, "ratio": 16,
         "dim": 256, "features": ("res5", "stem", "res4"), "trainable_w": False,
         "add_mean": True},
        dataset="cityscapes", crop_size=(768, 768), batch_size=8, eval_size=(1024, 2048),
        learning_rate=0.007, num_train_steps=90_000)
    config.basis.num_batches = 100
    return config
