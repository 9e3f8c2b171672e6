"""A few validation images with their predictions, drawn at every evaluation for
TensorBoard (and Weights & Biases when on): input | prediction | ground truth, with a legend
(`lapseg.visualize.side_by_side`).

The images are the first `config.preview_images` of the evaluation split, read once at the
start of training, undecoded by the training pipeline: the raw uint8 image and its label.
Each is normalised, zero-padded to its evaluation size (`lapseg.ops.sizes.eval_padded_size`,
as `lapseg eval` pads it) and predicted by one jitted eval-mode forward per padded size, so
the picture shows what the evaluation scored.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lapseg import models, visualize
from lapseg.ops import sizes
from lapseg.ops.normalize import normalize


class Previewer:
    """`previewer(variables)` -> `{'preview/<index>': uint8 [H', W', 3]}` side-by-side panels.

    Args:
      model: the trained model (a lapseg model: eval-mode `'logits'` at input resolution).
      examples: dicts of uint8 `'image'` `[H, W, 3]` and int `'label'` `[H, W]`.
      info: the dataset's `lapseg.data.DatasetInfo` (class names, palette, ignore label).
      normalization: the training config's `data.normalize`.
    """

    def __init__(self, model, examples, *, info, normalization: str):
        self.examples = [{"image": np.asarray(e["image"], np.uint8),
                          "label": np.asarray(e["label"]).reshape(np.shape(e["image"])[:2])}
                         for e in examples]
        self.info = info
        self.normalization = normalization
        self._labels = jax.jit(
            lambda variables, images: jnp.argmax(models.model_logits(model, variables, images), -1))

    def __call__(self, variables) -> dict:
        panels = {}
        for index, example in enumerate(self.examples):
            image = example["image"]
            height, width = image.shape[:2]
            padded = np.zeros((1, *sizes.eval_padded_size(height, width), 3), np.float32)
            padded[0, :height, :width] = normalize(image, self.normalization)
            labels = np.asarray(self._labels(variables, padded))[0, :height, :width]
            panels[f"preview/{index}"] = visualize.side_by_side(
                image, labels, self.info.palette, class_names=self.info.class_names,
                ignore_label=self.info.ignore_label, ground_truth=example["label"])
        return panels
