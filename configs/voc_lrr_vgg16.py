"""LRR-4x on VGG-16 (levels fc7, relu5_3, relu4_3, relu3_3), the recipe of golnazghiasi/LRR
`LRR4xTrainVGG16Pascal.m`, on PASCAL VOC 2012.

Data: trains on VOC + SBD `train_aug` and evaluates on VOC `val`:
`--config.data.source_dir=.../VOCdevkit/VOC2012 --config.data.sbd_dir=.../benchmark_RELEASE`
(docs/datasets.md). (The reference trains on VOC 2011 + SBD, `opts.vocEdition = '11'`,
`opts.vocAdditionalSegmentations = true`, and validates on VOC 2011 val.)

Recipe: VGG-16 without pad100 (fc6 padded by 3, `LRRInitializeFromVGG16.m`), K = 10 bases of
32x32 patches (`opts.num_basis = 10`, `opts.patch_size = 32`), 5x5 coefficient convs
(`neigh_size = 5`); SGD momentum 0.9, weight decay 5e-4 on every parameter (`cnnTrainDag.m`
`opts.weightDecay = 0.0005`; `AddSubModel.m` gives the coefficient filters and biases
`weightDecay = 1`), base learning rate 1e-3 on the per-pixel mean loss (`SegmentationLoss.m`
weighs each image by 1 / its labelled pixel count + 1), the coefficient convs at the
reference's per-level rates (`learning_rate_for_new_vars = [0.1, 0.1/2, 0.1/8, 0.1/512]`)
and their biases at 2x the base rate at every level (`AddSubModel.m`: `learningRate = 2`),
the VGG-16 biases at 2x their filters' rate (`LRRInitializeFromVGG16.m`:
`net.params(bias).learningRate = 2 * net.params(filt).learningRate`), the bases at the
reference's scale (`basis.lrr_scale='reference'`); Caffe/MatConvNet VGG-16 weights on a 0-255
input scale ('caffe' normalisation, `vgg16_caffe`: no hub file holds them); dilation/erosion
objectives at the coarsest level (`opts.dilate_erode_seg = [1 0 0 0]`, `opts.strelRad = 32`);
labels downsampled at block centres (equal to `getBatch.m`'s `imresize(anno_, 1 /
gt_resizes(ri), 'nearest')` at its integer factors). Scales: the reference resizes the long
side to S = 384 + 32 k, k = -3..10 (288..704, `bopts.imageSize_multi = [-3 : 1 : 10]`,
`ResizeAndSaveTrainData.m`), i.e. S / 500 = 0.576..1.408 of an image with VOC's 500-pixel long
side; here a uniform scale 0.576-1.408 of the image and random 384 x 384 crops (padded where
smaller). Batch 16 (the reference's 20 is not divisible by 8 devices).

Stages, as the reference trains (`lrs = 0.001 * [1, 1, 1, 1/16]`, `num_train_epochs = [65 0 0
16]`): `get_config('coarse')` trains the 32x level (with its dilation/erosion objectives)
alone for 65 epochs of train_aug at lr 1e-3; `get_config('refine')` then trains every level
for 16 epochs at lr 1e-3 / 16 from that run (`--config.init.checkpoint=COARSE_WORKDIR`):

    lapseg train --config configs/voc_lrr_vgg16.py:coarse --workdir runs/voc_lrr32 ...
    lapseg train --config configs/voc_lrr_vgg16.py:refine --workdir runs/voc_lrr \
        --config.init.checkpoint=runs/voc_lrr32 ...

The default, 'all', trains every level at once for the two stages' 81 epochs in one run
(docs/recipes.md gives the reason). Poly decay instead of the reference's halvings at epochs
51 and 61 (`div_lr_by_2_at = {[51 61],[],[],[]}`): lapseg's schedule is poly.
"""

from lapseg.train import recipes

VGG_LEVELS = ("fc7", "relu5_3", "relu4_3", "relu3_3")
TRAIN_AUG_IMAGES = 10_582  # VOC 2012 train + SBD, less VOC 2012 val (docs/datasets.md)
BATCH_SIZE = 16
# stage -> (epochs of train_aug, learning rate, supervised outputs)
STAGES = {
    "all": (65 + 16, 1e-3, None),
    "coarse": (65, 1e-3, {"level_32": 1.0}),
    "refine": (16, 1e-3 / 16, None),
}


def get_config(stage: str = "all"):
    """LRR-4x on VOC; `stage`: 'all' (every level from the start), or the reference's
    'coarse' (the 32x level alone) and 'refine' (every level at lr / 16, from a 'coarse' run
    given by `--config.init.checkpoint`)."""
    if stage not in STAGES:
        raise ValueError(f"voc_lrr_vgg16: stage must be one of {tuple(STAGES)}, got {stage!r}")
    epochs, learning_rate, weights = STAGES[stage]
    config = recipes.lrr(
        {"backbone": "vgg16", "backbone_kwargs": {"pad100": False}, "basis": "pca",
         "num_bases": 10},
        dataset="voc", crop_size=(384, 384), scale_range=(288 / 500, 704 / 500),
        normalize="caffe", batch_size=BATCH_SIZE, learning_rate=learning_rate,
        warmup_steps=0,
        lr_multipliers=recipes.lrr_reference_multipliers(VGG_LEVELS) + (("backbone/*/bias", 2.0),),
        dilation_erosion=True, num_train_steps=round(epochs * TRAIN_AUG_IMAGES / BATCH_SIZE),
        backbone_weights="vgg16_caffe", weight_decay_mask="all")
    if weights is not None:
        config.loss.weights = dict(weights)
    config.basis.lrr_scale = "reference"
    config.data.train_split = "train_aug"
    return config
