"""DUpsampling (Decoders Matter) with ResNet-50 at output stride 16 on CamVid (11 classes).

The network of LinZhuoChen/DUpsampling's `train.sh` (`--model DUNet_sybn`,
`models/dunet_sybn.py`): ResNet-50 with `layer4` dilated (output stride 16), the stem
(conv1, stride 2) and res4 fused with res5 at that resolution (`x_13` + `x_46`, see
`lapseg/decoders/dupsampling.py`), two 3x3 convs 256 with dropout 0.5 / 0.1, a 1x1
projection to L = 64 and DUpsampling by ratio 16 (`DUpsampling(64, 16, ...)`), adaptive
temperature. W starts from the PCA of the 16 x 16 x 11 training label patches (fitted by
`lapseg basis`, or by `lapseg train` before step 0) and keeps training with the network
(`recipes.DUPSAMPLING_REFERENCE`: the reference pre-computes W, then never calls
`freeze_w`). Optimiser as `models/dunet_sybn.py`: one SGD over every parameter, lr 0.007
for all of them (one rate, no 10x head), momentum 0.9, weight decay 1e-4 on every
parameter, poly 0.9 without warm-up (`warmup_iters` is never read); batch 16 (`train.sh`
`--batchSize 16`). CamVid specifics: 352 x 480 crops (multiples of 16), scales 0.5-2, flips,
100 epochs of the 367 training images (2,300 steps at batch 16, as the other CamVid configs'
~100 epochs). Deviations (data, patch mean, normalisation): docs/recipes.md.
"""

from lapseg.train import recipes


def get_config():
    return recipes.finetune(
        "dupsampling",
        {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 16}, "ratio": 16,
         "dim": 64, "features": ("res5", "stem", "res4"), "add_mean": True,
         **recipes.DUPSAMPLING_REFERENCE},
        dataset="camvid", crop_size=(352, 480), batch_size=16, learning_rate=0.007,
        num_train_steps=2300, lr_multipliers=(), weight_decay_mask="all")
