"""Decoded images as uint8 RGB arrays, whatever their PNG/JPEG mode.

PIL's `convert('RGB')` clips 16-bit grayscale (modes `I;16`, `I`) at 255, so a 16-bit PNG
turns white and every prediction on it is wrong; here such images are rescaled to 8 bits
first (`value >> 8`, the high byte, as 16-bit RGB PNGs are read). Palette, grayscale,
alpha and CMYK images are converted by PIL; float images are refused. `read_rgb` opens a
file (or takes a PIL image) and turns it upright by its EXIF orientation first.
"""

import os

import numpy as np
import PIL.Image
import PIL.ImageOps

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def rgb_array(image: PIL.Image.Image, path="image") -> np.ndarray:
    """`image` (decoded) as uint8 `[H, W, 3]` RGB; ValueError naming `path` for float images.

    Modes: RGB as is; L, P, LA, PA, RGBA, CMYK, YCbCr, 1 through PIL (alpha dropped);
    16-bit grayscale (`I;16*`, and `I` of values up to 65535) by its high byte.
    """
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(f"{path}: 32-bit integer image with values outside 0..65535; "
                             "save it as an 8- or 16-bit PNG")
        gray = (values >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        raise ValueError(f"{path}: floating-point image (mode F); save it as an 8- or 16-bit PNG")
    return np.asarray(image.convert("RGB"))


def read_rgb(image) -> np.ndarray:
    """uint8 RGB `[H, W, 3]` of an image file's path or a PIL image, upright as viewers
    show it (its EXIF orientation applied, e.g. a phone held sideways), any mode as
    `rgb_array` converts it.

    Raises:
      ValueError: naming the path, for a missing, unreadable, cut or corrupt file or a
        float image.
    """
    if isinstance(image, PIL.Image.Image):
        return rgb_array(PIL.ImageOps.exif_transpose(image))
    path = os.fspath(image)
    try:
        with PIL.Image.open(path) as opened:
            return rgb_array(PIL.ImageOps.exif_transpose(opened), path)
    except (OSError, SyntaxError, ValueError) as err:  # missing, unreadable, cut, corrupt, float
        raise ValueError(f"cannot read image {path}: {err}") from err
