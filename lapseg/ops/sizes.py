"""`int` or `(h, w)` arguments as `(h, w)`: the one check of sizes, bins, kernels, strides;
`eval_padded_size`: the one padded-size rule of evaluation and prediction."""

import math
import numbers

EVAL_MULTIPLE = 32  # evaluation sizes are multiples of this (the backbones' output stride)


def pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """`value`, an int or a pair of them, as `(h, w)` of Python ints, each >= `minimum`.

    Integral numpy scalars (and integral floats) count as ints; anything else, three
    values or a value below `minimum` is a ValueError naming `name`, e.g.
    `'resize_bilinear: size'`.
    """
    pair_ = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(pair_) != 2 or any(int(v) != v or v < minimum for v in pair_):
        kind = {1: "positive", 0: "non-negative"}.get(minimum, f">= {minimum}")
        raise ValueError(f"{name} must be a {kind} int or a pair of them, got {value!r}")
    return int(pair_[0]), int(pair_[1])


def eval_padded_size(height: int, width: int) -> tuple[int, int]:
    """The size an image of `height` x `width` is zero-padded to (bottom, right) for
    evaluation and prediction: each side rounded up to a multiple of 32 up to 512, of 64
    up to 1024, of 128 up to 2048 and so on (one eighth of the side's octave), so the
    padding adds at most 1/8 per side while a split of many sizes (VOC, ADE20K) compiles a
    few dozen shapes, not one per image. Cityscapes' 1024 x 2048 and every side up to 512
    are padded exactly as the multiple-of-32 rule pads them.

    The eval pipeline (`lapseg.data.pipeline`, when `eval_size` is unset), `lapseg eval` and
    `lapseg predict` (`lapseg.infer.Predictor`'s default `bucket=0`) all pad by this rule,
    so they give one image the same labels.
    """
    def side(n):
        step = max(EVAL_MULTIPLE, 2 ** (math.ceil(math.log2(max(n, 1))) - 4))
        return step * math.ceil(n / step)

    return side(height), side(width)
