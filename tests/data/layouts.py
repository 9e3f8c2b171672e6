"""Tiny copies of the standard datasets' folder layouts, with random pixels and known labels.

Each `make_*` writes a layout under `root` and returns `{split: [mapped label, ...]}`:
the class-id maps (uint8, 255 ignored) the reader must produce, computed here with
tables written out independently of lapseg's, so a test can count them with numpy.
"""

import numpy as np
import PIL.Image
import scipy.io

IGNORE = 255

# Cityscapes labelIds -> trainIds, written out from cityscapesScripts' labels.py table.
CITYSCAPES = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
              24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _image(rng, size):
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def _save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array, **kwargs).save(path)


def _voc_palette():
    ids = np.arange(256)
    palette = np.zeros((256, 3), np.uint8)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= (((ids >> (3 * bit + channel)) & 1) << (7 - bit)).astype(np.uint8)
    return palette


def make_cityscapes(root, seed=0, size=(32, 64)):
    """train: 2 cities, 3 images (one with a labelTrainIds file beside its labelIds); val:
    1 city, 2 images. Every labelId 0..33 occurs; color/instance/polygon files beside."""
    rng = np.random.default_rng(seed)
    expected = {}
    for split, frames in (("train", [("aachen", 0), ("aachen", 1), ("bochum", 0)]),
                          ("val", [("frankfurt", 0), ("frankfurt", 1)])):
        expected[split] = []
        for index, (city, frame) in enumerate(frames):
            key = f"{city}_000000_{frame:06d}"
            _save(root / "leftImg8bit" / split / city / f"{key}_leftImg8bit.png", _image(rng, size))
            ids = rng.integers(0, 34, size).astype(np.uint8)
            ids.flat[:34] = np.arange(34)
            train_ids = np.vectorize(lambda i: CITYSCAPES.get(int(i), IGNORE))(ids).astype(np.uint8)
            label_dir = root / "gtFine" / split / city
            _save(label_dir / f"{key}_gtFine_labelIds.png", ids)
            _save(label_dir / f"{key}_gtFine_color.png", _image(rng, size))
            _save(label_dir / f"{key}_gtFine_instanceIds.png", ids.astype(np.uint16) * 1000)
            (label_dir / f"{key}_gtFine_polygons.json").write_text("{}")
            if split == "train" and index == 1:  # a trainIds file wins over the labelIds one
                train_ids = np.where(train_ids == 0, 1, train_ids).astype(np.uint8)
                _save(label_dir / f"{key}_gtFine_labelTrainIds.png", train_ids)
            expected[split].append(train_ids)
    return expected


def _voc_mask(rng, size):
    mask = rng.integers(0, 21, size).astype(np.uint8)
    mask[rng.random(size) < 0.1] = IGNORE  # object borders
    return mask


def make_voc(root, seed=0, sbd=True):
    """VOCdevkit/VOC2012 (train 3, val 2, trainval 5; sizes vary) and, with `sbd`,
    benchmark_RELEASE: SBD train {v0, s0, s1, t1}, SBD val {v1, s2, t0}. train_aug is
    then {t0, t1, t2, s0, s1, s2}: v* are VOC val (left out), t* VOC train (VOC's masks
    and images, though SBD has t0 and t1 too), s* SBD's only.
    Returns `{split: {id: mapped label}}` and the two roots."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    palette = _voc_palette().flatten().tolist()
    ids = {"train": ["t0", "t1", "t2"], "val": ["v0", "v1"]}
    masks = {}
    for index, key in enumerate(ids["train"] + ids["val"]):
        size = (24 + 8 * index, 40 - 4 * index)  # VOC's sizes vary
        PIL.Image.fromarray(_image(rng, size)).save(_mkdir(voc / "JPEGImages") / f"{key}.jpg")
        mask = _voc_mask(rng, size)
        image = PIL.Image.frombytes("P", (size[1], size[0]), mask.tobytes())
        image.putpalette(palette)
        image.save(_mkdir(voc / "SegmentationClass") / f"{key}.png")
        masks[key] = mask
    lists = _mkdir(voc / "ImageSets" / "Segmentation")
    for split, keys in (*ids.items(), ("trainval", ids["train"] + ids["val"])):
        (lists / f"{split}.txt").write_text("\n".join(keys) + "\n")
    expected = {split: {k: masks[k] for k in keys} for split, keys in ids.items()}
    expected["trainval"] = {**expected["train"], **expected["val"]}
    sbd_root = root / "benchmark_RELEASE"
    if sbd:
        dataset = sbd_root / "dataset"
        sbd_lists = {"train": ["v0", "s0", "s1", "t1"], "val": ["v1", "s2", "t0"]}
        for index, key in enumerate(sorted({k for keys in sbd_lists.values() for k in keys})):
            size = (20 + 4 * index, 28)
            PIL.Image.fromarray(_image(rng, size)).save(_mkdir(dataset / "img") / f"{key}.jpg")
            seg = rng.integers(0, 21, size).astype(np.uint8)
            scipy.io.savemat(_mkdir(dataset / "cls") / f"{key}.mat", {"GTcls": {
                "Segmentation": seg, "Boundaries": np.zeros((1, 1)),
                "CategoriesPresent": np.unique(seg)}})
            masks.setdefault(key, seg)  # VOC's mask wins where both have one
        for split, keys in sbd_lists.items():
            (dataset / f"{split}.txt").write_text("\n".join(keys) + "\n")
        aug = ["t0", "t1", "t2", "s0", "s1", "s2"]
        expected["train_aug"] = {k: masks[k] for k in aug}
    return expected, voc, sbd_root


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_ade20k(root, seed=0):
    """ADEChallengeData2016: 3 training and 2 validation images of varying sizes, ids
    0..150 (all of them occur)."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    expected = {}
    for split, folder, count in (("train", "training", 3), ("val", "validation", 2)):
        expected[split] = []
        for index in range(count):
            size = (30 + 6 * index, 48 - 5 * index)
            key = f"ADE_{folder[:5] if folder == 'training' else 'val'}_{index:08d}"
            PIL.Image.fromarray(_image(rng, size)).save(
                _mkdir(base / "images" / folder) / f"{key}.jpg")
            ids = rng.integers(0, 151, size).astype(np.uint8)
            ids.flat[:151] = np.arange(151)
            _save(base / "annotations" / folder / f"{key}.png", ids)
            expected[split].append(np.where(ids == 0, IGNORE, ids - 1).astype(np.uint8))
    return expected, base


def class_pixels(labels, num_classes):
    """Labelled pixels per class over `labels`, ignore excluded."""
    counts = np.zeros(num_classes, np.int64)
    for label in labels:
        counts += np.bincount(label[label != IGNORE].ravel(), minlength=num_classes)[:num_classes]
    return counts.tolist()
