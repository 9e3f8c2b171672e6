"""LRR-4x on VGG-16 (levels fc7, relu5_3, relu4_3, relu3_3), the recipe of golnazghiasi/LRR
`LRR4xTrainVGG16Pascal.m`, on PASCAL VOC 2012.

Data: trains on VOC + SBD `train_aug` and evaluates on VOC `val`:
`--config.data.source_dir=.../VOCdevkit/VOC2012 --config.data.sbd_dir=.../benchmark_RELEASE`
(README: Datasets).

Recipe: VGG-16 without pad100 (fc6 padded by 3), K = 10 bases of 32x32 patches, 5x5
coefficient convs; 384x384 crops at scales 288..704 / 384; SGD momentum 0.9, weight decay
5e-4, base learning rate 1e-3 on the per-pixel mean loss (MatConvNet's SegmentationLoss
divides by the pixel count), coefficient convs at the reference's per-level rates (0.1,
0.05, 0.0125 and 0.1/512 of the base rate for 32x..4x, biases 2x: `recipes.lrr_reference_
multipliers`) with the bases at the reference's scale (`basis.lrr_scale='reference'`); Caffe/MatConvNet VGG-16
weights on a 0-255 input scale ('caffe' normalisation); dilation/erosion objectives at the
coarsest level on, as in the reference. Deviations: batch 16 (the reference's 20 is not
divisible by 8 devices), poly decay instead of halving at epochs 51 and 61, all levels
trained at once instead of 32x first.
"""

from lapseg.train import recipes

VGG_LEVELS = ("fc7", "relu5_3", "relu4_3", "relu3_3")


def get_config():
    config = recipes.lrr(
        {"backbone": "vgg16", "backbone_kwargs": {"pad100": False}, "basis": "pca",
         "num_bases": 10},
        dataset="voc", crop_size=(384, 384), scale_range=(0.75, 1.83), normalize="caffe",
        batch_size=16, learning_rate=1e-3, warmup_steps=0,
        lr_multipliers=recipes.lrr_reference_multipliers(VGG_LEVELS), dilation_erosion=True,
        num_train_steps=8000, backbone_weights="vgg16_caffe")
    config.basis.lrr_scale = "reference"
    config.data.train_split = "train_aug"
    return config
