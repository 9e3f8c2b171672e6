"""`lapseg.ops.sizes.pair`: the one `int or (h, w)` check (resize sizes, pooling bins,
kernels, strides, paddings)."""

import numpy as np
import pytest

from lapseg.ops.sizes import pair


def test_ints_and_pairs():
    assert pair(3, "size") == (3, 3)
    assert pair((2, 5), "size") == (2, 5)
    assert pair([np.int64(4), 6], "size") == (4, 6)
    assert all(type(v) is int for v in pair(np.int32(7), "size"))  # pylint: disable=unidiomatic-typecheck
    assert pair(0, "padding", minimum=0) == (0, 0)


@pytest.mark.parametrize("value", [0, (1, 0), (1, 2, 3), (1.5, 2), -1])
def test_bad_values_name_the_argument(value):
    with pytest.raises(ValueError, match=r"resize: size must be a positive int or a pair"):
        pair(value, "resize: size")


def test_a_negative_padding():
    with pytest.raises(ValueError, match="padding must be a non-negative int"):
        pair((1, -1), "padding", minimum=0)
