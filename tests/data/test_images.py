"""`lapseg.data.images.rgb_array`: every mode to uint8 RGB, 16-bit grayscale included."""

import io

import numpy as np
import PIL.Image
import pytest

from lapseg.data import images


def _roundtrip(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return PIL.Image.open(io.BytesIO(buffer.getvalue()))


def test_sixteen_bit_gray_png_is_its_high_byte_not_white():
    gray8 = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    wide = gray8.astype(np.uint16) * 257  # 0..65535, the 8-bit values scaled
    image = _roundtrip(PIL.Image.fromarray(wide))
    assert image.mode.startswith("I")  # PIL reads a 16-bit PNG as I;16 (or I)
    assert np.asarray(image.convert("RGB")).max() == 255 and (np.asarray(image.convert("RGB")) == 255).mean() > 0.9
    got = images.rgb_array(image)
    assert got.dtype == np.uint8 and got.shape == (5, 7, 3)
    np.testing.assert_array_equal(got, np.repeat(gray8[..., None], 3, -1))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK"])
def test_eight_bit_modes_as_pil_converts_them(mode):
    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    image = PIL.Image.fromarray(rgb).convert(mode)
    np.testing.assert_array_equal(images.rgb_array(image), np.asarray(image.convert("RGB")))


def test_rgb_is_unchanged_and_float_is_refused():
    rgb = np.random.default_rng(2).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(images.rgb_array(PIL.Image.fromarray(rgb)), rgb)
    with pytest.raises(ValueError, match="x.tif: floating-point"):
        images.rgb_array(PIL.Image.fromarray(np.zeros((2, 2), np.float32)), "x.tif")
