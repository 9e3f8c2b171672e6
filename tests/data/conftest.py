"""A default `shapes` build shared by the tests of lapseg.data (built once per session)."""

import time

import pytest

from lapseg import data


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """tfds data_dir holding the default shapes dataset (2000 train / 200 validation, 96x96)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    start = time.perf_counter()
    data.load_source("shapes", "train", data_dir=data_dir)
    print(f"\nshapes (2000 + 200 images, 96x96) built in {time.perf_counter() - start:.1f} s")
    return data_dir
