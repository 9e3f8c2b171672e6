"""Named paths over pytrees: `[('params/head/kernel', leaf), ...]` and back.

The one way lapseg turns a tree into path strings (as big_vision's
`utils.tree_flatten_with_names`): the optimiser's learning-rate rules match these names
(`lapseg.train.optim`), checkpoints name the arrays that do not fit a model by them
(`lapseg.train.checkpoint`), warm starts copy variables by them (`lapseg.train.init`) and a
resumed run names the config field that changed with them (`lapseg.train.config`, `sep='.'`).

A name joins the path's entries with `sep`: a dict key, a dataclass field or attribute
(`TrainState.params`), a sequence index (an optax state tuple). Leaves come in
`jax.tree_util` order (dict keys sorted).
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax


def key_name(key) -> str:
    """One entry of a `jax.tree_util` key path as a string (`DictKey`'s key, `GetAttrKey`'s
    name, `SequenceKey`'s index, `FlattenedIndexKey`'s key)."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_name(path, sep: str = "/") -> str:
    """A `jax.tree_util` key path as one string, e.g. `'params/head/kernel'` ('' for the root)."""
    return sep.join(key_name(k) for k in path)


def flatten_with_names(tree, *, sep: str = "/",
                       is_leaf: Callable[[Any], bool] | None = None) -> list[tuple[str, Any]]:
    """`[(name, leaf), ...]` of every leaf of `tree`, in `jax.tree_util` order.

    Args:
      tree: any pytree (dicts, FrozenDicts, flax dataclasses, tuples, ...).
      sep: what joins a path's entries.
      is_leaf: as in `jax.tree_util`: a node it is true for is a leaf (e.g. anything but a
        dict, to keep tuples and None as values).
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    return [(path_name(path, sep), leaf) for path, leaf in leaves]


def unflatten_names(named: Mapping[str, Any] | Iterable[tuple[str, Any]], *,
                    sep: str = "/") -> dict:
    """Nested dicts from `{name: leaf}` (or `(name, leaf)` pairs): the inverse of
    `flatten_with_names` for a tree of dicts."""
    items = named.items() if isinstance(named, Mapping) else named
    tree = {}
    for name, leaf in items:
        *parents, last = name.split(sep)
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return tree


def map_with_names(fn: Callable[..., Any], tree, *rest, sep: str = "/",
                   is_leaf: Callable[[Any], bool] | None = None):
    """`tree` with every leaf replaced by `fn(name, leaf, *rest_leaves)`; the structure (a
    FrozenDict stays one) is `tree`'s."""
    return jax.tree_util.tree_map_with_path(
        lambda path, *leaves: fn(path_name(path, sep), *leaves), tree, *rest, is_leaf=is_leaf)
