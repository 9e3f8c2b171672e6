"""RefineNet-101 on Cityscapes (19 classes), guosheng/refinenet's training recipe.

4-cascaded RefineNet on a standard ResNet-101 (OS 32), adapt channels 512/256/256/256,
2 adapt RCUs, 4-stage CRP (pool then conv), 3 output RCUs; loss on the 1/4-resolution
scores against nearest-resized labels (`coarse_logits`, as `cnn_layer_dense_softmaxloss`).
Optimiser as `gen_net_opts_model_type*.m`: SGD momentum 0.9, weight decay 5e-4, head lr
5e-4 with the ResNet at 0.1x (here: base lr 5e-5, head x10), crops 600 x 600 for
Cityscapes (`demo_refinenet_train.m`), scales 0.7-1.3, flips. Deviations: the original
trains with batch 1 at a fixed rate, lowered by hand; here batch 8 and poly decay over
90,000 steps. Prepare the data with `tfds build cityscapes/semantic_segmentation` (needs TF).
"""

from lapseg.train import recipes
from lapseg.train.recipes import REFINENET101


def get_config():
    return recipes.finetune(
        "refinenet", REFINENET101, dataset="cityscapes", crop_size=(600, 600), batch_size=8,
        eval_size=(1024, 2048), scale_range=(0.7, 1.3), learning_rate=5e-5,
        weight_decay=5e-4, num_train_steps=90_000, loss_weights={"coarse_logits": 1.0})
