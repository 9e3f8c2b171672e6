"""`lapseg predict IMAGES...`: files, directories and glob patterns, in order, each image
once; a directory or pattern that matches nothing is a one-line error naming it."""

import os

import pytest

from lapseg.cli import predict
from lapseg.train import config as config_lib
from tests.cli.helpers import run


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """tmp_path as the working dir, with `a/` (b.png, c.JPG, d.jpeg, notes.txt, .hidden.png,
    sub/e.png), `x.png` and the empty dir `empty/`."""
    monkeypatch.chdir(tmp_path)
    for name in ("a/b.png", "a/c.JPG", "a/d.jpeg", "a/notes.txt", "a/.hidden.png", "a/sub/e.png",
                 "x.png"):
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        open(name, "wb").close()
    os.mkdir("empty")
    os.mkdir("a/folder.png")  # a directory with an image's name is no image
    return tmp_path


def _paths(*args):
    return predict.image_paths("lapseg predict", list(args))


def test_a_directory_gives_its_images_sorted_not_recursive(tree):
    assert _paths("a") == ["a/b.png", "a/c.JPG", "a/d.jpeg"]


def test_a_pattern_is_expanded_sorted(tree):
    assert _paths("a/*.p*") == ["a/b.png"]  # glob skips hidden files
    assert _paths("a/*.png") == ["a/b.png"]  # a/folder.png is a directory: never matched
    assert _paths("a/*/*.png") == ["a/sub/e.png"]
    assert _paths("a/[cd].*") == ["a/c.JPG", "a/d.jpeg"]


def test_files_directories_and_patterns_mix_in_order_each_once(tree):
    assert _paths("x.png", "a", "a/sub/*.png", "./a/b.png", "x.png", "a/d.jpeg") == [
        "x.png", "a/b.png", "a/c.JPG", "a/d.jpeg", "a/sub/e.png"]
    assert _paths(str(tree / "a" / "d.jpeg"), "a") == [
        str(tree / "a" / "d.jpeg"), "a/b.png", "a/c.JPG"]  # the first spelling is kept


@pytest.mark.parametrize("arg, message", [
    ("empty", "no .png/.jpg/.jpeg images in directory empty"),
    ("a/sub/..//sub/*.jpg", "no image files match 'a/sub/..//sub/*.jpg'"),
    ("nowhere/*.png", "no image files match 'nowhere/*.png'"),
    ("missing.png", "no such image file: missing.png"),
])
def test_what_matches_nothing_is_a_one_line_error_naming_it(tree, arg, message):
    with pytest.raises(SystemExit) as exit_:
        _paths("x.png", arg)
    assert str(exit_.value) == f"lapseg predict: {message}"


def test_the_command_names_an_empty_match_before_restoring_anything(tree):
    config_lib.save(config_lib.base_config(), tree / "w")  # a work dir with no checkpoint
    for arg, message in [("empty", "in directory empty"), ("a/*.gif", "match 'a/*.gif'")]:
        code = run("predict", "--workdir", tree / "w", "x.png", arg)
        assert isinstance(code, str) and "\n" not in code, code
        assert code.startswith("lapseg predict: no ") and message in code, code
    code = run("predict", "--workdir", tree / "w", "a")  # found: then the missing checkpoint
    assert isinstance(code, str) and "no checkpoint in" in code, code
