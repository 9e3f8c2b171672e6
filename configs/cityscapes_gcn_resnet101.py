"""GCN (Large Kernel Matters) with ResNet-101 on Cityscapes (19 classes).

GCN modules with k = 15 on res5..res2 of a standard ResNet-101 (OS 32), nine BRs, learned
x2 deconvolutions initialised bilinear (the paper's Fig. 2). Optimiser: the common
PyTorch-port recipe, SGD momentum 0.9, lr 0.01 (head x10), weight decay 5e-4, poly 0.9;
800 x 800 crops, scales 0.5-2, flips, batch 8. The paper's ResNet-152 / ResNet-GCN
encoders and its training schedule are not reproduced.
Prepare the data with `tfds build cityscapes/semantic_segmentation` (needs TF).
"""

from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "gcn"
    config.model_kwargs = {"backbone": "resnet101", "backbone_kwargs": {"output_stride": 32},
                           "kernel_size": 15, "upsampling": "deconv"}
    config.data.dataset = "cityscapes"
    config.data.crop_size = (800, 800)
    config.data.scale_range = (0.5, 2.0)
    config.data.batch_size = 8
    config.data.eval_size = (1024, 2048)
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.head_lr_multiplier = 10.0
    config.loss.weights = {"logits": 1.0}
    config.num_train_steps = 90_000
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
