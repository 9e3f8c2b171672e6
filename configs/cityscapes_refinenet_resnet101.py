"""RefineNet-101 on Cityscapes (19 classes), guosheng/refinenet's training recipe.

4-cascaded RefineNet on a standard ResNet-101 (OS 32), adapt channels 512/256/256/256,
2 adapt RCUs, 4-stage CRP (pool then conv), 3 output RCUs; the image enlarged x1.2 before
the ResNet (`input_scale`, `gen_featnet_config_resnet_custom(..., 1.2, 4, 1)` in
`main/gen_net_opts_model_type1.m`), in training and evaluation; BatchNorm on the stored
global statistics in training too (`bnorm_moment_type_trn='global'`, `bn_statistics`); loss
on the 1/4-resolution scores (`coarse_logits`) against labels downsampled by MATLAB's
nearest (`main/cnn_layer_dense_softmaxloss_forward.m` `imresize(one_gt_mask,
node_map_size, 'nearest')`: `label_sampling='matlab'`). Optimiser as
`gen_net_opts_model_type1.m`: SGD momentum 0.9, weight decay 5e-4 on every parameter
(`main/cnn_layer_dagnn_wrapper_backward.m`: `thisDecay = optimizer_param.weightDecay *
net.params(p).weightDecay`; the new layers' filters and biases have `weightDecay = 1`,
`main/My_net_util.m`; the ResNet's, BN included, DagNN's default 1 unless the pretrained .mat,
not in the repository, sets another: `weight_decay_mask='all'`), head lr
5e-4 with the ResNet at 0.1x (`input_featnet_lr_multiplier`; here: base lr 5e-5, head x10),
crops 600 x 600 for Cityscapes (`demo_refinenet_train.m`), scales 0.7-1.3, flips; images
whose short edge is under 450 enlarged to it first (`input_img_short_edge_min=450`:
`config.data.min_short_edge`; a no-op for Cityscapes' 1024-pixel short edge).

Deviations (docs/recipes.md):
- batch 8 at the reference's per-step rates, where the reference trains with batch 1
  (`train_opts.batch_size=1`) at a fixed 5e-4, lowered by hand to 5e-5 once validation
  stalls (`demo_refinenet_train_reduce_learning_rate.m`). Both losses are per-pixel means,
  so a batch-8 step has the reference step's expected size with 1/8 of its gradient
  variance; the rates are not scaled with the batch (the linear scaling rule is a
  heuristic the reference never used), and poly decay over 90,000 steps replaces the
  manual drop, which needs a person watching the validation curve;
- uniform random crops and image order, where the reference samples both by class
  (`gen_crop_point_type='class_sample'`: crops centred on a pixel of a sampled class;
  `epoch_task_gen_type_train='class_sample'`, at most 100 images per class and epoch, 1000-2000
  images per epoch): lapseg's data pipeline has no class-aware sampler, and adding one is a
  change to `lapseg/data`, outside the model recipe;
- bilinear x1.2 enlargement after normalisation, not MATLAB's bicubic `imresize` of the
  uint8 image (`lapseg/decoders/refinenet.py`).
Data: `--config.data.source_dir=DIR`, the Cityscapes root holding `leftImg8bit/`
and `gtFine/` (docs/datasets.md).
"""

from lapseg.train import recipes
from lapseg.train.recipes import REFINENET101


def get_config():
    config = recipes.finetune(
        "refinenet", REFINENET101, dataset="cityscapes", crop_size=(600, 600), batch_size=8,
        eval_size=(1024, 2048), scale_range=(0.7, 1.3), learning_rate=5e-5,
        weight_decay=5e-4, num_train_steps=90_000, loss_weights={"coarse_logits": 1.0},
        weight_decay_mask="all", label_sampling=recipes.REFINENET_LABEL_SAMPLING)
    config.data.min_short_edge = recipes.REFINENET_MIN_SHORT_EDGE
    return config
