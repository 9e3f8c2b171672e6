"""FCN-8s on VGG-16 (Long et al., CVPR 2015), the all-at-once recipe of fcn.berkeleyvision.org
`voc-fcn8s-atonce/solver.prototxt` (pytorch-fcn `train_fcn8s_atonce.py`), on PASCAL VOC 2012.

Data: trains on VOC + SBD `train_aug` and evaluates on VOC `val`:
`--config.data.source_dir=.../VOCdevkit/VOC2012 --config.data.sbd_dir=.../benchmark_RELEASE`
(docs/datasets.md). (The reference trains on SBD `train` (`net.py`: `SBDDSegDataLayer`,
`split='train'`) and scores VOC 2011 `seg11valid`, the val images not in SBD train
(`solve.py`: `../data/segvalid11.txt`).)

Recipe: SGD momentum 0.99, weight decay 5e-4, fixed learning rate 1e-10 on the loss
*summed* over the pixels of one image (Caffe's `normalize: false`, batch 1). lapseg's loss
is the mean over pixels, so the same step is lr = 1e-10 x pixels per image (VOC images are
at most 500 x 500, most 500 x 375: that count is used); the batch of 8
(one image per device) averages 8 such gradients. Caffe adds the decay to that summed
gradient (`base_lr (grad_sum + 5e-4 w)`), so under the mean loss the decay must shrink by
the same pixel count: weight decay 5e-4 / (500 x 375) = 2.7e-9 gives the reference's
`1e-10 x 5e-4 w` per step (`recipes.caffe_sum_loss_weight_decay`); 5e-4 itself would decay
187,500x harder relative to the gradient step. Biases: lr x2 (`lr_mult: 2`) and no decay
(`decay_mult: 0`; lapseg decays kernels only). Pixels are the whole crop, the valid
(non-ignored) ones in the reference; the difference is the ignored fraction of an image.
No augmentation (the reference's data layers crop and flip nothing): each image is trained
whole, padded (bottom/right, label ignored) to the 500 x 500 batch shape. Caffe VGG-16 weights, hence
'caffe' input normalisation (BGR, 0-255 minus mean).
Skips scaled by 0.01 / 0.0001 ('fcn8s_atonce'), upsampling fixed to bilinear.
Length: 37,500 steps of 8 images, the 300,000 images of the reference's 300,000 single-image
iterations (`solver.prototxt` `max_iter: 300000`; `solve.py`: 75 x `solver.step(4000)`).
"""

from lapseg.train import recipes
from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "fcn8s_atonce"
    config.model_kwargs = {"backbone": "vgg16", "backbone_kwargs": {"pad100": True}}
    config.init.backbone_weights = recipes.imagenet_weights("vgg16_caffe")

    config.data.dataset = "voc"
    config.data.train_split = "train_aug"
    config.data.crop_size = (500, 500)  # whole VOC images (sides <= 500), padded
    config.data.scale_range = (1.0, 1.0)
    config.data.flip = False
    config.data.normalize = "caffe"
    config.data.batch_size = 8

    pixels = 500 * 375  # per (typical) image: the summed loss's scale
    config.optimizer.learning_rate = 1e-10 * pixels
    config.optimizer.momentum = 0.99
    config.optimizer.weight_decay = recipes.caffe_sum_loss_weight_decay(5e-4, pixels)
    config.optimizer.warmup_steps = 0
    config.optimizer.lr_power = 0.0  # fixed learning rate
    config.optimizer.lr_multipliers = (("*/bias", 2.0),)  # the reference's biases at 2x (lr_mult 2)

    config.loss.weights = {"logits": 1.0}
    config.num_train_steps = 300_000 // 8
    return config
