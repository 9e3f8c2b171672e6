"""Test set-up: eight virtual CPU devices, so sharded code runs as it would on 8 chips."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402

# Tests initialise many small models; the 'rbg' generator compiles far faster on CPU than
# the default threefry (a small ResNet's init: ~7 s instead of ~40 s on 2 loaded cores).
# No test depends on the generator's exact values.
jax.config.update("jax_default_prng_impl", "rbg")

CAMVID_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "notebook: executes a notebook (deselect with -m 'not notebook')")
    config.addinivalue_line(
        "markers", "multiprocess: launches several `lapseg train` processes joined by "
        "jax.distributed (deselect with -m 'not multiprocess')")


@pytest.fixture(scope="session")
def camvid_dir():
    """The shared CamVid copy (../shared/data/camvid); tests that need it skip without it."""
    path = pathlib.Path(os.environ.get("LAPSEG_CAMVID_DIR", CAMVID_DIR))
    if not (path / "trainannot").is_dir():
        pytest.skip(f"CamVid not found at {path} (set LAPSEG_CAMVID_DIR)")
    return path
