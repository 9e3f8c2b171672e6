"""A picture of LRR's bases: one row per class, one column per basis (the paper's Fig. 4)."""

import numpy as np
from PIL import Image, ImageDraw

_TILE_SCALE = 2  # basis pixels -> picture pixels
_GAP = 4
_NAME_WIDTH = 110


def _colors(tile: np.ndarray) -> np.ndarray:
    """`[h, w]` -> uint8 `[h, w, 3]`: blue (negative), white (0), red (positive), scaled to max |tile|."""
    v = tile / max(float(np.abs(tile).max()), 1e-12)
    fade = 1.0 - np.abs(v)
    rgb = np.stack([np.where(v < 0, fade, 1.0), fade, np.where(v > 0, fade, 1.0)], -1)
    return np.round(255 * rgb).astype(np.uint8)


def bases_picture(bases: np.ndarray, class_names) -> Image.Image:
    """RGB image of `bases` `[P, P, K, C]`: one row per class (named), one column per basis,
    blue negative / white zero / red positive, each tile scaled to its own maximum."""
    bases = np.asarray(bases)
    size, _, num_bases, num_classes = bases.shape
    tile = size * _TILE_SCALE
    height, width = _GAP + num_classes * (tile + _GAP), _NAME_WIDTH + num_bases * (tile + _GAP)
    picture = np.full((height, width, 3), 255, np.uint8)
    for c in range(num_classes):
        top = _GAP + c * (tile + _GAP)
        for k in range(num_bases):
            left = _NAME_WIDTH + k * (tile + _GAP)
            image = np.kron(bases[:, :, k, c], np.ones((_TILE_SCALE, _TILE_SCALE)))
            picture[top : top + tile, left : left + tile] = _colors(image)
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    for c, name in enumerate(class_names):
        draw.text((_GAP, _GAP + c * (tile + _GAP) + tile // 2 - 5), str(name)[:18], fill=(0, 0, 0))
    return image
