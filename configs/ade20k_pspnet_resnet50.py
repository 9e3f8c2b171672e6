"""PSPNet-50 on ADE20K (`scene_parse150`), hszhao/semseg `config/ade20k/ade20k_pspnet50.yaml`.

Deep-stem dilated ResNet-50 at output stride 8, PPM bins (1, 2, 3, 6) with PyTorch's
adaptive pooling (not the Caffe release's fixed kernels), aux head on res4 with weight
0.4; 473 x 473 crops, scale 0.5-2, batch 16, SGD lr 0.01 (head x10), momentum 0.9,
weight decay 1e-4, poly 0.9, 100 epochs of 20,210 images (126,000 steps). semseg also
rotates by -10..10 degrees and blurs; this pipeline does not.
Prepare the data with `tfds build scene_parse150 --file_format=array_record` (needs TF).
"""

from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "pspnet"
    config.model_kwargs = {"backbone": "resnet50",
                           "backbone_kwargs": {"deep_stem": True, "output_stride": 8},
                           "bins": (1, 2, 3, 6), "pooling": "adaptive", "dropout_rate": 0.1}
    config.data.dataset = "scene_parse150"
    config.data.crop_size = (473, 473)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = 16
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.lr_power = 0.9
    config.optimizer.head_lr_multiplier = 10.0
    config.loss.weights = {"logits": 1.0, "aux": 0.4}
    config.num_train_steps = 126_000
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
