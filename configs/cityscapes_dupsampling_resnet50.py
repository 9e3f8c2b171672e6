"""DUpsampling (Decoders Matter) with ResNet-50 at output stride 16 on Cityscapes (19 classes).

The reference (LinZhuoChen/DUpsampling) trains on PASCAL VOC aug only; Cityscapes is this
library's large benchmark. Network and optimiser as `train.sh` (`--model DUNet_sybn
--batchSize 16 --nepochs 300`) and `models/dunet_sybn.py`: ResNet-50 with `layer4` dilated
(output stride 16), the stem (conv1, stride 2) and res4 fused with res5 (`x_13` + `x_46`,
see `lapseg/decoders/dupsampling.py`), two 3x3 convs 256 with dropout 0.5 / 0.1, a 1x1
projection to L = 64 (`nn.Conv2d(256, 64, kernel_size=1)`) and DUpsampling by ratio 16
(`DUpsampling(64, 16, ...)`; L = 256 is `models/dunet.py`'s, which `train.sh` does not run),
adaptive temperature; W starts from the PCA of the training label patches (`lapseg basis`,
or `lapseg train` before step 0) and keeps training (`recipes.DUPSAMPLING_REFERENCE`). One
SGD over every parameter at lr 0.007 (no 10x head), momentum 0.9, weight decay 1e-4 on
every parameter, poly 0.9 without warm-up, batch 16. Cityscapes specifics: 768 x 768 crops,
scales 0.5-2, flips, 45,000 steps (~242 epochs of the 2,975 fine images, the 720,000 images
of the other Cityscapes configs' 90,000 steps at batch 8).
Data: `--config.data.source_dir=DIR`, the Cityscapes root holding `leftImg8bit/`
and `gtFine/` (docs/datasets.md). Deviations: docs/recipes.md.
"""

from lapseg.train import recipes


def get_config():
    config = recipes.finetune(
        "dupsampling",
        {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 16}, "ratio": 16,
         "dim": 64, "features": ("res5", "stem", "res4"), "add_mean": True,
         **recipes.DUPSAMPLING_REFERENCE},
        dataset="cityscapes", crop_size=(768, 768), batch_size=16, eval_size=(1024, 2048),
        learning_rate=0.007, num_train_steps=45_000, lr_multipliers=(),
        weight_decay_mask="all")
    config.basis.num_batches = 100
    return config
