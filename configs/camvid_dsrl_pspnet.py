"""DSRL (Wang et al., CVPR 2020) around PSPNet-50 on CamVid (11 classes, 360 x 480).

The network sees 180 x 240 and predicts at 360 x 480 through a learned SSSR upsampling
module (2x2 stride-2 deconvolution + BN + ReLU, 1x1 classifier;
`--config.model_kwargs.sssr_upsampling=bilinear` is Dootmaan/DSRL's bilinear upsampling);
the SISR branch reconstructs the 360 x 480 image. Whole-image crops after random scaling
(0.5-2) and flips, batch 8, SGD poly 0.9, lr 0.01 (head x10), weight decay 1e-4 on every
parameter, 100 epochs of the 367 training images (4,600 steps, as the other CamVid configs).
Loss `L_ce + 0.4 L_aux + 0.1 L_mse + 1.0 L_fa` (`recipes.DSRL_LOSS_WEIGHTS`: the paper's
weights as lapseg's DSRL loss was written with them, not verified here; FA on 1/16-subsampled
maps as Dootmaan/DSRL `utils/fa_loss.py`: 22 x 30 pixels).
Deviations from Dootmaan/DSRL: docs/recipes.md.
"""

from lapseg.train import recipes


def get_config():
    return recipes.dsrl_pspnet50(dataset="camvid", crop_size=(360, 480), eval_size=(360, 480),
                                 num_train_steps=4600)
