"""LRR-4x on ResNet-50 (output stride 32, levels res5..res2) on CamVid (11 classes, 360x480).

Fit the bases first (or let `lapseg train` do it):
    lapseg basis --config configs/camvid_lrr_resnet50.py --workdir DIR \
        --config.data.source_dir=/path/to/CamVid

Recipe: the paper's objective (softmax CE at every level, weights 1; dilation/erosion
objectives available with `--config.loss.dilation_erosion=True
--config.model_kwargs.dilation_erosion=True`), K = 10 bases per class, SGD momentum 0.9,
poly 0.9, weight decay 5e-4 (the reference's), torchvision ImageNet weights ('torch'
normalisation), base learning rate 0.01 (BatchNorm'd ResNet, not the reference's VGG-16 on a
0-255 input scale, hence not its 1e-3); bases at unit flat-field gain and the coefficient
convs at 0.1x (biases 2x that), as configs/shapes_lrr.py sets them from the measured loss
curvature (`python -m benchmarks.lrr_curvature`).
"""

from lapseg.train import optim, recipes


def get_config():
    # ~110 epochs of CamVid's 367 training images.
    return recipes.lrr(
        {"backbone": "resnet50", "backbone_kwargs": {"output_stride": 32}, "basis": "pca",
         "num_bases": 10},
        dataset="camvid", crop_size=(352, 480), scale_range=(0.75, 1.5), normalize="torch",
        batch_size=8, learning_rate=0.01, warmup_steps=100,
        lr_multipliers=optim.lrr_multipliers((0.1, 0.1, 0.1, 0.1)), dilation_erosion=False,
        num_train_steps=5000)
