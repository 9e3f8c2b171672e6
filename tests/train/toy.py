"""A tiny segmentation model with BatchNorm and dropout, for testing the training system
without paying for a real backbone."""

import flax.linen as nn
import jax.numpy as jnp


class ToySegmenter(nn.Module):
    num_classes: int = 3
    width: int = 8
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = nn.Conv(self.width, (3, 3), dtype=self.dtype, name="backbone")(images)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        x = nn.relu(x)
        x = nn.Dropout(0.1, deterministic=not train)(x)
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="head")(x)
        return {"logits": logits.astype(jnp.float32)}


def toy(*, num_classes, dtype=jnp.float32, width=8):
    """Registry factory (tests register it as model 'toy')."""
    return ToySegmenter(num_classes=num_classes, width=width, dtype=dtype)


# A config file training model 'toy' (registered by the test) for 3 steps on 32 x 32 crops
# of the shapes data.
_CONFIG_FILE = '''
import ml_collections
from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "toy"
    config.model_kwargs = ml_collections.ConfigDict({{"width": 4}})
    config.data.data_dir = {data_dir!r}
    config.data.crop_size = (32, 32)
    config.data.batch_size = 8
    config.num_train_steps = 3
    config.log_every_steps = 1
    config.optimizer.warmup_steps = 1
    return config
'''


def config_file(data_dir: str | None = None) -> str:
    """The text of the toy config file; `data_dir`: its `config.data.data_dir` (None: the
    default)."""
    return _CONFIG_FILE.format(data_dir=data_dir)


def tiny_config(data_dir, *, model="toy", model_kwargs=None, steps=6):
    """A training config sized for tests: `model` (default the toy, width 4) on 32 x 32 shapes
    crops, batch 8, evaluation at 96 x 96 only at the end, logs every step."""
    import ml_collections  # pylint: disable=import-outside-toplevel

    from lapseg.train.config import base_config  # pylint: disable=import-outside-toplevel

    config = base_config()
    config.model = model
    config.model_kwargs = ml_collections.ConfigDict(model_kwargs or {"width": 4})
    config.data.data_dir = data_dir
    config.data.crop_size = (32, 32)
    config.data.batch_size = 8
    config.data.eval_size = (96, 96)
    config.num_train_steps = steps
    config.log_every_steps = 1
    config.eval_every_steps = 1000
    return config
