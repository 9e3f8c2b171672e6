"""DSRL (Wang et al., CVPR 2020) around PSPNet-50 on Cityscapes.

The paper's Cityscapes setting: the network sees the image downsampled x2 and predicts at
the original resolution; evaluation at 1024 x 2048 (the network runs at 512 x 1024).
Training crops of 512 x 1024 (network input 256 x 512) keep the feature-affinity matrices
small: 64 x 128 pixels after the 1/8 subsampling, two `[N, 8192, 8192]` f32 matrices per
step (256 MiB per image each); full 1024 x 2048 crops would need 4 GiB per image each.

Base: PSPNet on the deep-stem dilated ResNet-50 (output stride 8), auxiliary head 0.4,
SGD poly 0.9, lr 0.01 (head x10), weight decay 1e-4. Loss `L_ce + 0.1 L_mse + 1.0 L_fa`.
The paper's own bases were DeepLabv3+ and ESPNet; lapseg's DSRL wraps any decoder
(`model_kwargs.base`).
"""

from lapseg.train import recipes


def get_config():
    return recipes.dsrl_pspnet50(dataset="cityscapes", crop_size=(512, 1024),
                                 eval_size=(1024, 2048), num_train_steps=90_000)
