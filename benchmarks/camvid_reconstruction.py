"""Reconstruction mIoU of CamVid labels through DUpsampling's PCA matrix W and through bilinear
upsampling (the DUpsampling paper's Table 1, on CamVid).

    python -m benchmarks.camvid_reconstruction [--camvid_dir ../shared/data/camvid]
        [--ratios 8,16] [--dims 32,64,256]

W is fitted on every training label map (367, 360x480, taken as they are: every r x r block
that fits) by `lapseg.bases.dupsampling_matrix` with the largest dim (the top-L rows of that
PCA are the L-PCA); mIoU is measured on every validation map (101) by
`lapseg.bases.reconstruction_miou` (least-squares code through W, plus the patch mean) and
`lapseg.bases.bilinear_reconstruction_miou` (block averages upsampled bilinearly). Void
(id 11) is ignored.
"""

import argparse
import pathlib
import time

import numpy as np
from PIL import Image

from lapseg import bases

IGNORE, NUM_CLASSES = 11, 11
DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def labels(directory: pathlib.Path) -> np.ndarray:
    files = sorted(directory.glob("*.png"))
    if not files:
        raise SystemExit(f"no label PNGs in {directory}: pass --camvid_dir")
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid_dir", type=pathlib.Path, default=DEFAULT_DIR)
    parser.add_argument("--ratios", default="8,16")
    parser.add_argument("--dims", default="32,64,256")
    args = parser.parse_args()
    ratios = [int(r) for r in args.ratios.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    train, val = labels(args.camvid_dir / "trainannot"), labels(args.camvid_dir / "valannot")
    print(f"CamVid: W fitted on {len(train)} train maps, mIoU on {len(val)} val maps "
          f"({val.shape[1]}x{val.shape[2]})")
    print("| ratio | bilinear | " + " | ".join(f"DUpsampling dim {d}" for d in dims) + " | fit s |")
    print("|---" * (len(dims) + 3) + "|")
    for ratio in ratios:
        start = time.perf_counter()
        w, mean = bases.dupsampling_matrix((train[i : i + 8] for i in range(0, len(train), 8)),
                                           NUM_CLASSES, ratio=ratio, dim=max(dims),
                                           ignore_label=IGNORE)
        seconds = time.perf_counter() - start
        bilinear = bases.bilinear_reconstruction_miou(val, ratio, num_classes=NUM_CLASSES,
                                                      ignore_label=IGNORE)
        row = [bases.reconstruction_miou(val, w[:dim], ratio, num_classes=NUM_CLASSES,
                                         ignore_label=IGNORE, mean=mean) for dim in dims]
        print(f"| {ratio} | {bilinear:.3f} | " + " | ".join(f"{m:.3f}" for m in row)
              + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main()
