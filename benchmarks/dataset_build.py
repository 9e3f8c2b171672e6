"""Time to build the standard datasets from their folders: seconds per image, measured.

    python -m benchmarks.dataset_build [--images 12] [--camvid ../shared/data/camvid]
    python -m benchmarks.dataset_build --sizes DIR    # evaluation padding of DIR's images

Writes `--images` pairs of each layout at the dataset's real image size into a temporary
directory, builds one split of each through `lapseg.data.load_source` (check, decode,
re-encode the labels, ArrayRecord) and prints seconds per image and the estimate for the
full splits (per-image cost x image count). Photos: CamVid's, resized to each size, so
that PNG/JPEG compression and decoding cost what real photos cost (random pixels compress
far worse); without CamVid, random pixels (an upper bound). Labels: CamVid's label maps
resized (nearest) and mapped into each dataset's id range.

`--sizes DIR` instead reads the size of every .jpg/.png under DIR (headers only) and
prints, for the three ways to evaluate images of many sizes, the number of input shapes
(compilations) and the pixels computed per labelled pixel: batch 1 at each image's size
rounded up to 32, padding to the largest image, and lapseg's padded-size buckets
(`lapseg.data.pipeline.eval_padded_size`).
"""

import argparse
import pathlib
import tempfile
import time

import numpy as np
import PIL.Image
import scipy.io

from lapseg import data
from lapseg.data import pipeline

CAMVID = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
# Images per split of the full releases (the readers' module docstrings).
FULL = {"cityscapes": {"train": 2975, "val": 500},
        "voc": {"train_aug": 10582, "val": 1449},
        "ade20k": {"train": 20210, "val": 2000}}
SIZES = {"cityscapes": (1024, 2048), "voc": (375, 500), "ade20k": (512, 683)}  # (H, W)


def _photos(camvid: pathlib.Path, count: int):
    """`count` (image, label) uint8 pairs: CamVid's, or random pixels without it."""
    if (camvid / "train").is_dir():
        names = sorted((camvid / "train").glob("*.png"))[:count]
        return [(np.asarray(PIL.Image.open(p).convert("RGB")),
                 np.asarray(PIL.Image.open(camvid / "trainannot" / p.name))) for p in names]
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 256, (360, 480, 3), np.uint8), rng.integers(0, 11, (360, 480),
                                                                          np.uint8))
            for _ in range(count)]


def _resized(image, label, size):
    height, width = size
    return (np.asarray(PIL.Image.fromarray(image).resize((width, height), PIL.Image.BILINEAR)),
            np.asarray(PIL.Image.fromarray(label).resize((width, height), PIL.Image.NEAREST)))


def _write(root, name, pairs):
    """The layout of dataset `name` under `root` (one split), and load_source kwargs."""
    keys = [f"k{i:05d}" for i in range(len(pairs))]
    if name == "cityscapes":
        for key, (image, label) in zip(keys, pairs):
            for folder, suffix, array in (("leftImg8bit", "leftImg8bit", image),
                                          ("gtFine", "gtFine_labelIds", (label * 3).astype(np.uint8))):
                path = root / folder / "val" / "city" / f"city_{key}_000019_{suffix}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                PIL.Image.fromarray(array).save(path)
        return "val", {"source_dir": root}
    if name == "ade20k":
        for key, (image, label) in zip(keys, pairs):
            for folder, ext, array in (("images", "jpg", image), ("annotations", "png", label * 13)):
                path = root / folder / "validation" / f"ADE_val_{key}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                PIL.Image.fromarray(array.astype(np.uint8)).save(path, quality=90)
        return "val", {"source_dir": root}
    voc, sbd = root / "VOC2012", root / "benchmark_RELEASE" / "dataset"
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation",
                   sbd / "img", sbd / "cls"):
        folder.mkdir(parents=True, exist_ok=True)
    half = len(keys) // 2  # half with VOC's PNG masks, half with SBD's .mat masks (as train_aug)
    for index, (key, (image, label)) in enumerate(zip(keys, pairs)):
        mask = np.minimum(label, 20).astype(np.uint8)
        if index < half:
            PIL.Image.fromarray(image).save(voc / "JPEGImages" / f"{key}.jpg", quality=90)
            png = PIL.Image.frombytes("P", mask.shape[::-1], mask.tobytes())
            png.save(voc / "SegmentationClass" / f"{key}.png")
        else:
            PIL.Image.fromarray(image).save(sbd / "img" / f"{key}.jpg", quality=90)
            scipy.io.savemat(sbd / "cls" / f"{key}.mat", {"GTcls": {"Segmentation": mask}})
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(keys[:half]) + "\n")
    (lists / "val.txt").write_text("none\n")
    (sbd / "train.txt").write_text("\n".join(keys[half:]) + "\n")
    (sbd / "val.txt").write_text("\n")
    return "train_aug", {"source_dir": voc, "sbd_dir": sbd.parent}


def padding_table(sizes) -> str:
    """Shapes compiled and pixels computed per image pixel, for each evaluation design."""
    sizes = np.asarray(sizes)
    pixels = sizes.prod(1).sum()
    designs = {
        "each size, to 32": [tuple(32 * -(-s // 32)) for s in sizes],
        "largest image": [tuple(32 * -(-sizes.max(0) // 32))] * len(sizes),
        "padded-size buckets": [pipeline.eval_padded_size(*s) for s in sizes],
    }
    lines = [f"{len(sizes)} images, {len({tuple(s) for s in sizes})} distinct sizes",
             f"{'design':<22} {'shapes':>7} {'pixels / image pixel':>21}"]
    for name, padded in designs.items():
        lines.append(f"{name:<22} {len(set(padded)):>7} "
                     f"{np.prod(np.array(padded), 1).sum() / pixels:>21.3f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12, help="pairs per dataset")
    parser.add_argument("--camvid", type=pathlib.Path, default=CAMVID)
    parser.add_argument("--sizes", type=pathlib.Path, default=None,
                        help="print the evaluation padding of the images under this folder")
    args = parser.parse_args()
    if args.sizes is not None:
        paths = [p for p in sorted(args.sizes.rglob("*")) if p.suffix.lower() in (".jpg", ".png")]
        print(padding_table([PIL.Image.open(p).size[::-1] for p in paths]))
        return
    photos = _photos(args.camvid, args.images)
    print(f"photos: {'CamVid' if (args.camvid / 'train').is_dir() else 'random pixels'}, "
          f"{args.images} per dataset\n")
    print(f"{'dataset':<11} {'size (HxW)':<11} {'s/image':>8}   estimate for the full release")
    for name, size in SIZES.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            split, kwargs = _write(root / "src", name, [_resized(i, l, size) for i, l in photos])
            start = time.perf_counter()
            source = data.load_source(name, split, data_dir=root / "tfds", **kwargs)
            per_image = (time.perf_counter() - start) / len(source)
        total = sum(FULL[name].values())
        estimate = ", ".join(f"{s} {n}" for s, n in FULL[name].items())
        print(f"{name:<11} {size[0]}x{size[1]:<6} {per_image:>8.3f}   {total * per_image / 60:.1f} "
              f"min ({estimate} images)")


if __name__ == "__main__":
    main()
