"""DSRL (Wang et al., CVPR 2020) around PSPNet-50 on Cityscapes.

The network sees the image downsampled x2 (as Dootmaan/DSRL `train.py`:
`torch.nn.functional.interpolate(image, size=[i//2 ...], mode='bilinear',
align_corners=True)`; here without aligned corners, docs/recipes.md) and predicts at the
original resolution through the learned SSSR upsampling module; evaluation at 1024 x 2048
(the network runs at 512 x 1024). Training crops of 1024 x 1024 (network input 512 x 512),
Dootmaan/DSRL's `--crop-size 1024` (`RandomScaleCrop(base_size=1024, crop_size=1024)`, i.e.
scales 0.5-2 of the 1024-pixel short side, as here); the feature-affinity matrices are then
64 x 64 pixels after the 1/16 subsampling of `utils/fa_loss.py`, two `[N, 4096, 4096]` f32
matrices per step (64 MiB per image each).

Base: PSPNet on the deep-stem dilated ResNet-50 (output stride 8), auxiliary head 0.4,
SGD poly 0.9, lr 0.01 (head x10), weight decay 1e-4 on every parameter, batch 8, 90,000
steps. Loss `L_ce + 0.4 L_aux + 0.1 L_mse + 1.0 L_fa` (`recipes.DSRL_LOSS_WEIGHTS`, not
verified; Dootmaan/DSRL `train.py` has `w_sr=0.5`, `w_fa=0.5` for differently scaled terms).
lapseg's DSRL wraps any decoder (`model_kwargs.base`); Dootmaan/DSRL trains
DeepLabv3+ (ResNet-101, output stride 16) with batch 4 per GPU at lr 0.005 x batch / 4 for
1000 epochs; this config keeps the PSPNet recipe for the base (docs/recipes.md lists every
deviation and its reason).
"""

from lapseg.train import recipes


def get_config():
    return recipes.dsrl_pspnet50(dataset="cityscapes", crop_size=(1024, 1024),
                                 eval_size=(1024, 2048), num_train_steps=90_000)
