"""The built-in sample: scikit-image's `lfw_subset` brought to 60x60x3, so the product runs
with no FDDB at hand.

`skimage.data.lfw_subset()` ships inside the scikit-image wheel: 200 images, 25x25 float
grayscale in [0, 1]; the first 100 are faces (LFW), the last 100 non-faces cut from LFW
backgrounds. Each class is shuffled with the seed and split 60 / 20 / 20 train / val / test.
It is a smoke-test data set, not FDDB: numbers measured on it say nothing about the report.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dataset.archive import FACE, NON_FACE, CropSet, load_crops, save_crops
from dataset.errors import DataError

SIZE = 60
PER_CLASS = 100
SPLIT_SIZES = (60, 20, 20)  # train, val, test per class
NOTE = ("built-in sample: scikit-image lfw_subset (100 faces, 100 non-faces, 25x25 gray "
        "upscaled to 60x60 RGB); NOT FDDB, for smoke tests only")


def build_sample(out: str | os.PathLike, seed: int = 0) -> CropSet:
    """Write the built-in sample crop file to `out` (.npz + .json) and return it."""
    from skimage.data import lfw_subset  # scikit-image imports slowly; only here

    images = lfw_subset()  # (200, 25, 25) float in [0, 1]
    if images.shape[0] != 2 * PER_CLASS:
        raise DataError(f"scikit-image lfw_subset has {images.shape[0]} images, expected 200")
    x = np.stack([_to_rgb(im) for im in images])  # (200, 60, 60, 3) uint8
    y = np.array([FACE] * PER_CLASS + [NON_FACE] * PER_CLASS, dtype=np.uint8)
    split = np.empty(len(y), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(3), SPLIT_SIZES)  # 60 x 0, 20 x 1, 20 x 2
    for start in (0, PER_CLASS):
        split[start + rng.permutation(PER_CLASS)] = codes
    order = np.lexsort((1 - y.astype(int), split))  # train, val, test; faces first
    source = np.array([f"lfw_subset:{i:03d}" for i in range(len(y))])
    side = images.shape[1]
    box = np.tile(np.array([0, 0, side, side], dtype=np.float32), (len(y), 1))
    meta = {"source": "builtin-sample", "seed": seed, "folds": [], "iou_threshold": None,
            "note": NOTE, "split_rule": "per class, shuffled with the seed: 60/20/20"}
    return save_crops(out, x[order], y[order], split[order], source[order], box[order], meta)


def _to_rgb(gray: np.ndarray) -> np.ndarray:
    u8 = np.clip(np.rint(gray * 255), 0, 255).astype(np.uint8)
    big = Image.fromarray(u8).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return np.asarray(big.convert("RGB"), dtype=np.uint8)


def default_sample_path() -> Path:
    """$FACEHPO_HOME/sample.npz, FACEHPO_HOME defaulting to ~/.cache/facehpo."""
    home = os.environ.get("FACEHPO_HOME") or Path.home() / ".cache" / "facehpo"
    return Path(home).expanduser() / "sample.npz"


def ensure_sample() -> Path:
    """Build the sample at default_sample_path() unless a valid one is there; return the path.

    Concurrent callers may both build it: the content is deterministic and every file
    is replaced atomically, so any reader sees a complete, matching pair.
    """
    path = default_sample_path()
    try:
        if load_crops(path).is_sample:
            return path
    except DataError:
        pass  # absent or damaged: build it
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{path.parent}: cannot create the sample folder ({e.strerror})") from e
    build_sample(path)
    return path
