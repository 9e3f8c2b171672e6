"""Reading (and replacing) what an inner module's call returns, from its parent.

DSRL reuses its base decoder's single backbone call, and ICNet forks its backbone after
conv3_1: both need the output of one submodule's call made inside another module, which
`flax.linen.intercept_methods` gives without changing the inner module.
"""

import contextlib
from collections.abc import Callable

import flax.linen as nn


@contextlib.contextmanager
def tapped(selects: Callable, replace: Callable | None = None):
    """Within the block, every module method call for which `selects(context)` holds
    (`context`: flax's `InterceptorContext`, with `.module` and `.method_name`) appends its
    output to the yielded list; `replace(output)`, if given, is what that call returns to
    its caller instead.

        with tapped(lambda c: c.module is backbone and c.method_name == "__call__") as taps:
            outputs = base(images)
        features = taps[0]
    """
    taps = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if not selects(context):
            return out
        taps.append(out)
        return out if replace is None else replace(out)

    with nn.intercept_methods(interceptor):
        yield taps
