"""`int` or `(h, w)` arguments as `(h, w)`: the one check of sizes, bins, kernels, strides."""

import numbers


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
