"""Fixtures of the command tests: the toy model, one shapes build for the session."""

import pytest

from tests.cli import helpers


@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    helpers.register_toy(monkeypatch)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tfds data dir shared by the command tests (shapes is built into it once, ~15 s)."""
    return tmp_path_factory.mktemp("tfds")
