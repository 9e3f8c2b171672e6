"""Builds keyed by their source: a changed or different source directory is rebuilt.

A tfds builder that converts a local directory (`camvid`, `folder`) gets a builder config
named by `files(...)`, a hash of the relative path, size and mtime of every source file
(plus the content of small metadata files), so its ArrayRecord files live under
`data_dir/<dataset>/<fingerprint>/<version>/`: an edited file, an added one or another
directory gives another fingerprint and a fresh build, and an unchanged source reuses its
build without reading a file. `SourceBuilder` is the builder side: it keeps `source_dir`
through tfds's pickling (grain workers get the data source) and takes the fingerprint
config as given.
"""

import hashlib
import pathlib
from collections.abc import Callable, Iterable

import tensorflow_datasets as tfds


def files(root, dirs: Iterable[str], contents: Iterable[str] = (),
          skip: Callable[[str], bool] | None = None) -> str:
    """16 hex digits hashing the bytes of `root/<contents>` and the relative path, size and
    mtime of every file under `root/<dirs>` (recursively); missing entries are skipped, and
    so are files with a path component (below `root/<dir>`) for which `skip(name)` is true."""
    root = pathlib.Path(root)
    digest = hashlib.sha256()
    for name in contents:
        path = root / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\n")
    for name in dirs:
        for path in sorted((root / name).rglob("*")):
            if skip is not None and any(map(skip, path.relative_to(root / name).parts)):
                continue
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0"
                              f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def config(name: str, root) -> tfds.core.BuilderConfig:
    """The builder config keying a build by fingerprint `name` of source `root`."""
    return tfds.core.BuilderConfig(name=name, description=f"{pathlib.Path(root)}")


class SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder reading a local `source_dir` (None: the builder's own download)."""

    def __init__(self, *, source_dir=None, **kwargs):
        self._source_dir = None if source_dir is None else pathlib.Path(source_dir)
        super().__init__(**kwargs)
        # tfds pickles a builder (grain workers get its data source) as its constructor
        # arguments, which it records without ours.
        self._original_state["source_dir"] = self._source_dir

    def _create_builder_config(self, builder_config, version):
        # A fingerprint config is never among BUILDER_CONFIGS: use it as given, without
        # tfds's lookup and its "Using custom data configuration" warning on every load.
        del version
        return builder_config
