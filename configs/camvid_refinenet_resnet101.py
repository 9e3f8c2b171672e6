"""RefineNet-101 on CamVid (11 classes, 360 x 480), guosheng/refinenet's recipe.

Decoder as `cityscapes_refinenet_resnet101.py`, input enlarged x1.2 before the ResNet
(`input_scale`, the reference's `gen_featnet_config_resnet_custom(..., 1.2, 4, 1)`), frozen
global BN statistics (`bnorm_moment_type_trn='global'`), loss on the 1/4-resolution scores
against labels downsampled by MATLAB's nearest (`imresize(..., 'nearest')`:
`label_sampling='matlab'`). Data as `main/demo_refinenet_train.m`: images whose short edge is
under 450 are first enlarged to it (`input_img_short_edge_min=450`: CamVid's 360 x 480 becomes
450 x 600, `config.data.min_short_edge`), then scales 0.7-1.3, flips and 400 x 400 crops
(`crop_box_size=400`). Optimiser as `main/gen_net_opts_model_type1.m`: SGD momentum 0.9,
weight decay 5e-4 on every parameter (as the Cityscapes config), head lr 5e-4
with the ResNet at 0.1x; batch 8, poly decay over 4,600 steps (100 epochs).
Deviations as in the Cityscapes config (batch 8 at the batch-1 per-step rates with poly decay
instead of the manual drop to 5e-5, uniform instead of class-sampled crops and images), and:
the training loop evaluates CamVid at its own 360 x 480, where the reference's
`do_load_batch_data` enlarges every image it loads, evaluation included (`lapseg eval
--scales=1.25` scores at the enlarged size); docs/recipes.md.
"""

from lapseg.train import recipes
from lapseg.train.recipes import REFINENET101


def get_config():
    config = recipes.finetune(
        "refinenet", REFINENET101, dataset="camvid", crop_size=(400, 400), batch_size=8,
        scale_range=(0.7, 1.3), learning_rate=5e-5, weight_decay=5e-4,
        num_train_steps=4600, loss_weights={"coarse_logits": 1.0}, weight_decay_mask="all",
        label_sampling=recipes.REFINENET_LABEL_SAMPLING)
    config.data.min_short_edge = recipes.REFINENET_MIN_SHORT_EDGE
    return config
