"""The fine-tuning recipe that the papers' configs share, as one parameterised function.

PSPNet, RefineNet, GCN, DUpsampling and DSRL all fine-tune an ImageNet-pretrained backbone
with SGD (momentum 0.9), poly learning rate (power 0.9) without warm-up, the new head at
10x the base rate (`head_lr_multiplier`), and random scaling + cropping + flips. `configs/*.py` call `finetune`
with what differs (model, dataset, crop, batch, rate, steps) and then set their extras:

    config = recipes.finetune("gcn", {...}, dataset="camvid", crop_size=(360, 480),
                              batch_size=8, learning_rate=0.01, num_train_steps=4600,
                              weight_decay=5e-4)
"""

from lapseg.train.config import base_config

# Evaluation / checkpoint cadence per dataset: CamVid every 460 steps (10 epochs of its 367
# training images at batch 8); the large datasets every 5000 steps, checkpoints every 2000.
CADENCE = {
    "camvid": {"eval_every_steps": 460},
    "cityscapes": {"eval_every_steps": 5000, "checkpoint_every_steps": 2000},
    "scene_parse150": {"eval_every_steps": 5000, "checkpoint_every_steps": 2000},
}


def finetune(model: str, model_kwargs: dict, *, dataset: str, crop_size: tuple[int, int],
             batch_size: int, learning_rate: float, num_train_steps: int,
             weight_decay: float = 1e-4, scale_range: tuple[float, float] = (0.5, 2.0),
             eval_size: tuple[int, int] | None = None, loss_weights: dict | None = None,
             head_lr_multiplier: float = 10.0):
    """`base_config()` set to the shared fine-tuning recipe (see the module docstring).

    `loss_weights` defaults to `{'logits': 1.0}`; `eval_size` to the schema's default (the
    image size rounded up to 32).
    """
    config = base_config()
    config.model = model
    config.model_kwargs = model_kwargs
    config.data.dataset = dataset
    config.data.crop_size = tuple(crop_size)
    config.data.scale_range = tuple(scale_range)
    config.data.batch_size = batch_size
    if eval_size is not None:
        config.data.eval_size = tuple(eval_size)
    config.optimizer.update({"learning_rate": learning_rate, "momentum": 0.9,
                             "weight_decay": weight_decay, "warmup_steps": 0, "lr_power": 0.9,
                             "head_lr_multiplier": head_lr_multiplier})
    config.loss.weights = dict(loss_weights or {"logits": 1.0})
    config.num_train_steps = num_train_steps
    config.update(CADENCE.get(dataset, {}))
    return config


# Model settings that several configs share.
PSPNET50 = {"backbone": "resnet50", "backbone_kwargs": {"deep_stem": True, "output_stride": 8},
            "bins": (1, 2, 3, 6), "pooling": "adaptive", "dropout_rate": 0.1}
REFINENET101 = {"backbone": "resnet101", "backbone_kwargs": {"output_stride": 32},
                "channels": (512, 256, 256, 256), "crp_stages": 4, "crp_order": "pool_conv"}
# ICNet (Zhao et al., ECCV 2018) on a half-width deep-stem ResNet-50, and its cascade label
# guidance weights (lambda = 0.16 / 0.4 / 1 for the 1/16, 1/8 and 1/4 branch outputs).
ICNET50 = {"backbone": "resnet50",
           "backbone_kwargs": {"deep_stem": True, "output_stride": 8, "width": 0.5},
           "branch_channels": 128, "channels": 256, "bins": (1, 2, 3, 6)}
ICNET_LOSS_WEIGHTS = {"aux_sub4": 0.16, "aux_sub24": 0.4, "logits": 1.0}


def dsrl_pspnet50(*, dataset: str, crop_size: tuple[int, int], eval_size: tuple[int, int],
                  num_train_steps: int, batch_size: int = 8):
    """DSRL around PSPNet-50 (Wang et al., CVPR 2020): the PSPNet recipe (lr 0.01, auxiliary
    head 0.4) plus `L_mse` (0.1) and the feature-affinity loss (1.0, on 1/8-subsampled maps)."""
    config = finetune(
        "dsrl",
        {"base": "pspnet", "backbone": "resnet50",
         "backbone_kwargs": {"deep_stem": True, "output_stride": 8}, "base_kwargs": {},
         "sisr_features": ("res2", "res5"), "sisr_channels": 64, "espcn_channels": (64, 32)},
        dataset=dataset, crop_size=crop_size, batch_size=batch_size, eval_size=eval_size,
        learning_rate=0.01, num_train_steps=num_train_steps,
        loss_weights={"logits": 1.0, "aux": 0.4})
    config.loss.update({"mse_weight": 0.1, "fa_weight": 1.0, "fa_subsample": 8, "fa_p": 2.0,
                        "fa_q": 1.0})
    return config
