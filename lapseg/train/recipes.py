"""The fine-tuning recipe that the papers' configs share, as one parameterised function.

PSPNet, RefineNet, GCN, DUpsampling and DSRL all fine-tune an ImageNet-pretrained backbone
with SGD (momentum 0.9), poly learning rate (power 0.9) without warm-up, by default the new
head at 10x the base rate (`NEW_HEAD_10X`, per-group rates in
`config.optimizer.lr_multipliers`), and random scaling + cropping + flips. `configs/*.py`
call `finetune` with what differs (model, dataset, crop, batch, rate, steps, which
parameters are decayed) and then set their extras:

    config = recipes.finetune("gcn", {...}, dataset="camvid", crop_size=(360, 480),
                              batch_size=8, learning_rate=0.01, num_train_steps=4600,
                              weight_decay_mask="all")

The LRR configs share `lrr`: golnazghiasi/LRR's objective (every pyramid level, weights 1,
plus the optional dilation/erosion objectives), SGD momentum 0.9, weight decay 5e-4.

`pretrained_weights` names each config's ImageNet weights: a Hugging Face name where the hub
holds them (`HUB_WEIGHTS`), else a `.npz` file (`imagenet_weights`).

docs/recipes.md tabulates every config against its paper / reference recipe.
"""

import os

from lapseg.losses.lrr import DEFAULT_WEIGHTS as LRR_LEVEL_WEIGHTS
from lapseg.train.config import base_config
from lapseg.train.optim import LRR_FEATURES, lrr_multipliers

# The ImageNet weights the configs start from, by name. Those in `HUB_WEIGHTS` are read from
# the Hugging Face hub (`hf://...`, docs/weights.md: cached under HF_HOME, HF_HUB_OFFLINE
# honoured); the others have no hub file and are read from `$LAPSEG_WEIGHTS/<name>.npz`
# (default directory ~/.cache/lapseg/weights), which docs/training.md "Starting from ImageNet weights"
# says how to make (`lapseg convert-weights`). `imagenet_weights(name)` is always that .npz
# path (the route for any name, e.g. a machine without the hub cache);
# `pretrained_weights(name)` is what the configs use.
IMAGENET_WEIGHTS = {
    "resnet18": "torchvision resnet18(weights='IMAGENET1K_V1')",
    "resnet34": "torchvision resnet34(weights='IMAGENET1K_V1')",
    "resnet50": "torchvision resnet50(weights='IMAGENET1K_V1')",
    "resnet101": "torchvision resnet101(weights='IMAGENET1K_V1')",
    "resnet152": "torchvision resnet152(weights='IMAGENET1K_V1')",
    "resnet50_deep_stem": "semseg's resnet50_v2.pth (hszhao/semseg, the PSPNet release's backbone)",
    "resnet101_deep_stem": "semseg's resnet101_v2.pth (hszhao/semseg), a deep-stem ResNet-101 as "
                           "TorchSeg's resnet101_v1c.pth (DFN)",
    "vgg16": "torchvision vgg16(weights='IMAGENET1K_V1')",
    "vgg16_caffe": "Caffe's VGG_ILSVRC_16_layers in torchvision's vgg16 layout (BGR, 0-255)",
}
# timm's copies of torchvision's IMAGENET1K_V1 weights, in torchvision's layout (timm's VGG
# classifier names are mapped back; lapseg/backbones/hub.py, docs/weights.md). No hub file
# holds semseg's deep-stem ResNet-50 (`resnet50_v2.pth`: PSPNet, DSRL; ICNet's half width
# has none at all) or Caffe's BGR 0-255 VGG-16 (FCN-8s, LRR on VOC): those stay .npz.
HUB_WEIGHTS = {
    "resnet18": "hf://timm/resnet18.tv_in1k",
    "resnet34": "hf://timm/resnet34.tv_in1k",
    "resnet50": "hf://timm/resnet50.tv_in1k",
    "resnet101": "hf://timm/resnet101.tv_in1k",
    "resnet152": "hf://timm/resnet152.tv_in1k",
    "vgg16": "hf://timm/vgg16.tv_in1k",
}
WEIGHTS_DIR_ENV = "LAPSEG_WEIGHTS"
DEFAULT_WEIGHTS_DIR = os.path.join("~", ".cache", "lapseg", "weights")


def imagenet_weights(name: str) -> str:
    """The path the configs give `config.init.backbone_weights` for ImageNet weights `name`
    (a key of `IMAGENET_WEIGHTS`): `$LAPSEG_WEIGHTS/<name>.npz`, `~/.cache/lapseg/weights`
    when the variable is unset. Training fails before step 0, saying how to make the file,
    when it is missing; `--config.init.backbone_weights=''` trains from scratch instead."""
    if name not in IMAGENET_WEIGHTS:
        raise ValueError(f"no ImageNet weights named {name!r}; known: {', '.join(IMAGENET_WEIGHTS)}")
    directory = os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR
    return os.path.join(os.path.expanduser(directory), f"{name}.npz")


def pretrained_weights(name: str) -> str:
    """`config.init.backbone_weights` of the configs for ImageNet weights `name` (a key of
    `IMAGENET_WEIGHTS`): its Hugging Face name where one exists (`HUB_WEIGHTS`), else
    `imagenet_weights(name)`, the .npz path. Either way training fails before step 0 in one
    line when the weights cannot be read (an uncached repo offline, a missing file), saying
    how to get them; `--config.init.backbone_weights=''` trains from scratch instead."""
    if name not in IMAGENET_WEIGHTS:
        raise ValueError(f"no ImageNet weights named {name!r}; known: "
                         f"{', '.join(IMAGENET_WEIGHTS)}")
    return HUB_WEIGHTS.get(name) or imagenet_weights(name)


def backbone_weights_name(model_kwargs: dict) -> str:
    """`IMAGENET_WEIGHTS` key of a model's backbone: its arch, `_deep_stem` for a deep stem."""
    deep_stem = dict(model_kwargs.get("backbone_kwargs", {})).get("deep_stem", False)
    return model_kwargs["backbone"] + ("_deep_stem" if deep_stem else "")


# A new head on a pretrained backbone at 10x the base rate: hszhao/semseg `tool/train.py`
# (`modules_ori` at `base_lr`, `modules_new` = ppm, cls, aux at `base_lr * 10`), Dootmaan/DSRL
# `train.py` (`get_10x_lr_params`); RefineNet's ResNet at 0.1x its head is the same rule
# (`input_featnet_lr_multiplier=0.1`). DUpsampling's reference uses one rate (its configs pass
# `lr_multipliers=()`).
NEW_HEAD_10X = (("backbone/*", 1.0), ("*", 10.0))

# Evaluation / checkpoint cadence per dataset: CamVid every 460 steps (10 epochs of its 367
# training images at batch 8); the large datasets every 5000 steps, checkpoints every 2000.
CADENCE = {
    "camvid": {"eval_every_steps": 460},
    "cityscapes": {"eval_every_steps": 5000, "checkpoint_every_steps": 2000},
    "ade20k": {"eval_every_steps": 5000, "checkpoint_every_steps": 2000},
}


def finetune(model: str, model_kwargs: dict, *, dataset: str, crop_size: tuple[int, int],
             batch_size: int, learning_rate: float, num_train_steps: int,
             weight_decay: float = 1e-4, scale_range: tuple[float, float] = (0.5, 2.0),
             eval_size: tuple[int, int] | None = None, loss_weights: dict | None = None,
             lr_multipliers: tuple = NEW_HEAD_10X, pretrained: bool = True,
             weight_decay_mask: str = "kernels", label_sampling: str = "corner"):
    """`base_config()` set to the shared fine-tuning recipe (see the module docstring).

    `loss_weights` defaults to `{'logits': 1.0}`; `eval_size` to the schema's default (the
    image size rounded up to 32); `lr_multipliers` to the new head at 10x;
    `weight_decay_mask` ('kernels' or 'all', `lapseg.train.optim.WEIGHT_DECAY_MASKS`) to
    kernels only ('all' is what semseg, DSRL, DUpsampling and RefineNet do; their configs set
    it); `label_sampling` ('corner', 'center', 'matlab': how labels are downsampled to a
    coarser output, `lapseg.losses.for_model`) to PyTorch's 'corner', written into
    `config.loss` so that `--config.loss.label_sampling=...` can change it. With `pretrained`
    (and `model_kwargs` naming a backbone) the backbone starts from its ImageNet weights
    (`config.init.backbone_weights = pretrained_weights(backbone_weights_name(model_kwargs))`:
    a Hugging Face name, or the .npz path where the hub has no file).
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
                             "lr_multipliers": tuple(lr_multipliers),
                             "weight_decay_mask": weight_decay_mask})
    config.loss.weights = dict(loss_weights or {"logits": 1.0})
    config.loss.label_sampling = label_sampling
    config.num_train_steps = num_train_steps
    config.update(CADENCE.get(dataset, {}))
    if pretrained and "backbone" in model_kwargs:
        config.init.backbone_weights = pretrained_weights(backbone_weights_name(model_kwargs))
    return config


# Model settings that several configs share.
PSPNET50 = {"backbone": "resnet50", "backbone_kwargs": {"deep_stem": True, "output_stride": 8},
            "bins": (1, 2, 3, 6), "pooling": "adaptive", "dropout_rate": 0.1}
# guosheng/refinenet `main/gen_net_opts_model_type1.m` `do_config_refinenet`:
# `gen_featnet_config_resnet_custom(train_opts, resnet_layer_num, 1.2, 4, 1)`, i.e. the image is
# enlarged x1.2 before the ResNet (`my_get_batch_ds_info.m` `gen_net_input_info`), in training
# and at test time; `input_scale` does that inside the model. BatchNorm on the stored
# (ImageNet) statistics in training too, frozen: `train_opts.bnorm_moment_type_trn='global'`
# in the same file (`bn_statistics`, see lapseg/decoders/refinenet.py).
REFINENET101 = {"backbone": "resnet101", "backbone_kwargs": {"output_stride": 32},
                "channels": (512, 256, 256, 256), "crp_stages": 4, "crp_order": "pool_conv",
                "input_scale": 1.2, "bn_statistics": "global"}
# guosheng/refinenet's data and loss settings that the RefineNet configs set:
# `main/demo_refinenet_train.m` `run_config.input_img_short_edge_min=450` (an image whose short
# edge is shorter is enlarged to it, `main/my_get_batch_ds_info.m` `do_load_batch_data`:
# `config.data.min_short_edge`), and `main/cnn_layer_dense_softmaxloss_forward.m`
# `imresize(one_gt_mask, node_map_size, 'nearest')`, MATLAB's nearest label downsampling
# to the 1/4 scores (`config.loss.label_sampling = 'matlab'`).
REFINENET_MIN_SHORT_EDGE = 450
REFINENET_LABEL_SAMPLING = "matlab"
# DUpsampling's released training (LinZhuoChen/DUpsampling `train.py`, `train.sh`
# `--model DUNet_sybn`): W pre-fitted ("Precompute weight for 5 epoches",
# `model.pre_compute_W`), then trained with the network (`models/dunet_sybn.py`'s SGD holds
# every parameter with `requires_grad`; `freeze_w` is never called), and dropout 0.5 / 0.1
# after the decoder's two 3x3 convs (`self.dropout2 = nn.Dropout(0.5)`,
# `self.dropout3 = nn.Dropout(0.1)`). Model fields for the DUpsampling configs'
# `model_kwargs` (see lapseg/decoders/dupsampling.py).
DUPSAMPLING_REFERENCE = {"trainable_w": True, "dropout_rates": (0.5, 0.1)}
# ICNet (Zhao et al., ECCV 2018) on a half-width deep-stem ResNet-50, and its cascade label
# guidance: lambda = 0.4 / 0.4 / 1 for the 1/16, 1/8 and 1/4 branch outputs, each scored at
# its own resolution ('coarse_logits' is the 1/4 map `conv6_cls`, not the x4-upsampled
# 'logits'). These weights are attributed to the paper's Sec. 5 but NOT VERIFIED: the paper's
# text could not be read here, and the authors' repository (hszhao/ICNet) holds evaluation
# code only (no training solver). The one training code read, hellochick/ICNet-tensorflow
# `utils/config.py`, has `LAMBDA1 = 0.16`, `LAMBDA2 = 0.4`, `LAMBDA3 = 1.0` (`train.py`:
# `cfg.LAMBDA1 * loss_sub4 + cfg.LAMBDA2 * loss_sub24 + cfg.LAMBDA3 * loss_sub124`; its README:
# "This implementation is different from the details descibed in ICNet paper"), and
# open-mmlab/mmsegmentation `configs/_base_/models/icnet_r50-d8.py` gives its decode head
# `loss_weight=1.0` and both auxiliary heads `loss_weight=0.4`, the values kept here.
ICNET50 = {"backbone": "resnet50",
           "backbone_kwargs": {"deep_stem": True, "output_stride": 8, "width": 0.5},
           "branch_channels": 128, "channels": 256, "bins": (1, 2, 3, 6)}
ICNET_LOSS_WEIGHTS = {"aux_sub4": 0.4, "aux_sub24": 0.4, "coarse_logits": 1.0}
# ICNet starts from a trained PSPNet-50 (the paper builds ICNet from a PSPNet50 that it
# compresses by kernel pruning; lapseg does not prune): the ICNet configs leave
# `config.init.checkpoint` unset (train from lapseg's initialisation) and the command line
# names the PSPNet run, `--config.init.checkpoint=RUN` (its work dir, `checkpoints/` dir or a
# step dir). `lapseg.train.init.from_checkpoint` copies every variable whose path and shape
# match: ICNet's backbone takes the PSPNet's when both have the same shape, i.e. a PSPNet
# trained with the ICNet config's `backbone_kwargs`; mismatched shapes are refused and
# logged, not an error.


# DSRL's loss weights: w1 = 0.1 (MSE) and w2 = 1.0 (feature affinity), the values lapseg's
# DSRL objective (lapseg/losses/dsrl.py) was written with from the paper, NOT VERIFIED here
# (the paper's text could not be read). Dootmaan/DSRL `train.py` has `w_sr=0.5`, `w_fa=0.5`,
# but for other terms: its cross-entropy is divided by the batch size once more
# (`utils/loss.py` `SegmentationLosses(batch_average=True)`: `loss /= n`) and its affinity
# loss is summed over the batch on unnormalised features (`utils/fa_loss.py`), so its weights
# do not carry over to lapseg's per-pixel-mean CE and normalised, batch-mean affinity.
DSRL_LOSS_WEIGHTS = {"mse_weight": 0.1, "fa_weight": 1.0}


def dsrl_pspnet50(*, dataset: str, crop_size: tuple[int, int], eval_size: tuple[int, int],
                  num_train_steps: int, batch_size: int = 8):
    """DSRL around PSPNet-50 (Wang et al., CVPR 2020): the PSPNet recipe (lr 0.01, head x10,
    auxiliary head 0.4, weight decay on every parameter as semseg and Dootmaan/DSRL) plus the
    learned SSSR upsampling module, `L_mse` (0.1) and the feature-affinity loss (1.0;
    `DSRL_LOSS_WEIGHTS`), FA on 1/16-subsampled maps as Dootmaan/DSRL `utils/fa_loss.py`."""
    config = finetune(
        "dsrl",
        {"base": "pspnet", "backbone": "resnet50",
         "backbone_kwargs": {"deep_stem": True, "output_stride": 8}, "base_kwargs": {},
         "sssr_upsampling": "deconv", "sssr_channels": 64,
         "sisr_features": ("res2", "res5"), "sisr_channels": 64, "espcn_channels": (64, 32)},
        dataset=dataset, crop_size=crop_size, batch_size=batch_size, eval_size=eval_size,
        learning_rate=0.01, num_train_steps=num_train_steps,
        loss_weights={"logits": 1.0, "aux": 0.4}, weight_decay_mask="all")
    # FA without per-pixel normalisation, as Dootmaan/DSRL `utils/fa_loss.py` (its
    # normalising lines are commented out; its README calls the normalised variants "like a
    # disaster").
    config.loss.update({**DSRL_LOSS_WEIGHTS, "fa_subsample": 16, "fa_p": 2.0, "fa_q": 1.0,
                        "fa_normalize": False})
    return config


# DFN (Yu et al., CVPR 2018), from ycszen/TorchSeg `model/dfn/*.dfn.R101_v1c/`: cross-entropy on
# the four smooth heads at weight 1 (`network.py`: `loss0 + loss1 + loss2 + loss3`) plus
# `C.aux_loss_alpha = 0.1` (`config.py`) times the sigmoid focal loss (`train.py`:
# `SigmoidFocalLoss(ignore_label=255, gamma=2.0, alpha=0.25)`) of the four border heads
# (lapseg/losses/dfn.py). The backbone is a deep-stem ResNet-101 at output stride 32
# (`resnet101(..., deep_stem=True, stem_width=64)`), on `resnet101_deep_stem` weights.
DFN101 = {"backbone": "resnet101", "backbone_kwargs": {"deep_stem": True, "output_stride": 32},
          "channels": 512, "border_channels": 21}
DFN_LOSS_WEIGHTS = {"logits": 1.0, "smooth_res3": 1.0, "smooth_res4": 1.0, "smooth_res5": 1.0}
DFN_BORDER_LOSS = {"border_weight": 0.1, "focal_gamma": 2.0, "focal_alpha": 0.25,
                   "border_dilation": 7}


def dfn101(*, dataset: str, crop_size: tuple[int, int], batch_size: int, learning_rate: float,
           weight_decay: float, num_train_steps: int, eval_size: tuple[int, int] | None = None):
    """DFN on the deep-stem ResNet-101 with TorchSeg's recipe: SGD momentum 0.9, poly 0.9, the
    decoder at 10x (`train.py`: `base_lr * 10` for `business_layer`), weight decay on conv and
    linear kernels only (`furnace/utils/init_func.py` `group_weight`: BN and biases at
    `weight_decay=.0`), scales 0.5-2, flips; `DFN_LOSS_WEIGHTS` and `DFN_BORDER_LOSS`."""
    config = finetune("dfn", DFN101, dataset=dataset, crop_size=crop_size, batch_size=batch_size,
                      learning_rate=learning_rate, weight_decay=weight_decay,
                      num_train_steps=num_train_steps, eval_size=eval_size,
                      loss_weights=DFN_LOSS_WEIGHTS, weight_decay_mask="kernels")
    config.loss.update(DFN_BORDER_LOSS)
    return config


# GCN's kernel size per dataset (Peng et al., CVPR 2017): k about the size of the final
# (stride-32) feature map, so that the GCN covers it; k = 15 for PASCAL VOC (512 x 512
# inputs, 16 x 16 res5) and k = 25 for Cityscapes (800 x 800 crops, 25 x 25 res5) are
# attributed to the paper's Sec. 4.1 and 4.3, NOT VERIFIED (its text could not be read here;
# ZijunDeng/pytorch-semantic-segmentation `models/gcn.py` takes k as an argument). CamVid:
# 360 x 480 gives a 12 x 15 res5, hence 15 by the same rule.
GCN_KERNEL_SIZE = {"voc": 15, "cityscapes": 25, "camvid": 15}


def caffe_sum_loss_weight_decay(weight_decay: float, pixels: int) -> float:
    """`config.optimizer.weight_decay` matching a Caffe solver's `weight_decay` on a loss
    summed over `pixels` (`normalize: false`) when lapseg trains on the per-pixel mean at
    `lr = base_lr * pixels`.

    Caffe's step is `base_lr (grad_sum + wd w)`; lapseg's `lr (grad_mean + wd' w)` equals it
    with `lr = base_lr * pixels` (since `grad_mean = grad_sum / pixels`) only if
    `wd' = wd / pixels`: the unscaled `wd` would decay `pixels` times harder (172,800x for
    a 360 x 480 image).
    """
    return weight_decay / pixels


# golnazghiasi/LRR `LRR4xTrainVGG16Pascal.m`: `learning_rate_for_new_vars = [0.1, 0.1/2,
# 0.1/8, 0.1/512]`, the coefficient convs of the 32x, 16x, 8x and 4x levels at these
# fractions of the base rate (`modelInitialization/AddSubModel.m`: `net.params(ind).
# learningRate = learningrate;` for the filters `bases_coef_<level>f`), and their biases at
# `net.params(ind).learningRate = 2;` (`bases_coef_<level>b`), an absolute multiplier of the
# base rate, the same at every level; likewise the dilation/erosion heads
# (`modelInitialization/AddDilationErosionObjectives.m`).
LRR_REFERENCE_LEVEL_RATES = (0.1, 0.05, 0.0125, 0.1 / 512)
LRR_REFERENCE_BIAS_RATE = 2.0


def lrr_reference_multipliers(features=LRR_FEATURES) -> tuple:
    """The reference's per-level rates (`LRR_REFERENCE_LEVEL_RATES`) with every coefficient
    bias at 2x the base rate (`LRR_REFERENCE_BIAS_RATE`)."""
    return lrr_multipliers(LRR_REFERENCE_LEVEL_RATES, bias_rate=LRR_REFERENCE_BIAS_RATE,
                           features=features)


def lrr(model_kwargs: dict, *, dataset: str, crop_size: tuple[int, int],
        scale_range: tuple[float, float], normalize: str, batch_size: int,
        learning_rate: float, warmup_steps: int, lr_multipliers: tuple,
        dilation_erosion: bool, num_train_steps: int, backbone_weights: str | None = None,
        weight_decay_mask: str = "kernels"):
    """`base_config()` set to LRR's recipe (Ghiasi & Fowlkes, golnazghiasi/LRR).

    `model_kwargs` are the `lrr` factory's (backbone, basis, num_bases ...);
    `backbone_weights` (an `IMAGENET_WEIGHTS` key, default the backbone's) names the ImageNet
    weights the backbone starts from (`pretrained_weights`); `weight_decay_mask` which
    parameters are decayed (`finetune`); labels are sampled at block centres
    (`config.loss.label_sampling = 'center'`, equal to the reference's MATLAB
    `imresize(..., 'nearest')` at its integer factors, `getBatch.m`); with
    `dilation_erosion` the model gets the dilation/erosion heads and the loss their
    objectives (weight 1, radius 32 input pixels, the reference's strel radius). Every
    pyramid level is supervised with weight 1 (`lapseg.losses.lrr.DEFAULT_WEIGHTS`); SGD
    momentum 0.9, weight decay 5e-4 (the reference's); random scaling, crops and flips.
    """
    config = base_config()
    config.model = "lrr"
    config.model_kwargs = {**model_kwargs, "dilation_erosion": dilation_erosion}
    config.data.update({"dataset": dataset, "crop_size": tuple(crop_size),
                        "scale_range": tuple(scale_range), "flip": True,
                        "normalize": normalize, "batch_size": batch_size})
    config.optimizer.update({"learning_rate": learning_rate, "momentum": 0.9,
                             "weight_decay": 5e-4, "warmup_steps": warmup_steps,
                             "lr_multipliers": tuple(lr_multipliers),
                             "weight_decay_mask": weight_decay_mask})
    config.loss.weights = dict(LRR_LEVEL_WEIGHTS)
    config.loss.label_sampling = "center"
    config.loss.update({"dilation_erosion": dilation_erosion, "dilation_erosion_weight": 1.0,
                        "dilation_erosion_radius": 32})
    config.num_train_steps = num_train_steps
    config.init.backbone_weights = pretrained_weights(
        backbone_weights or backbone_weights_name(model_kwargs))
    return config
