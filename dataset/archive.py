"""The file contract between data building and training: one .npz plus a JSON sidecar.

`crops.npz` holds the arrays; `crops.json` beside it holds counts, seed, source,
normalization statistics (train split only) and a content hash. Both are written
atomically (temp file + rename), so an interrupted build leaves no half file.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataset.atomic import atomic_write
from dataset.errors import DataError

SPLITS = ("train", "val", "test")  # split codes 0, 1, 2
FACE, NON_FACE = 1, 0


@dataclass(frozen=True)
class CropSet:
    x: np.ndarray        # (n, 60, 60, 3) uint8
    y: np.ndarray        # (n,) uint8, 1 = face, 0 = non-face
    split: np.ndarray    # (n,) uint8, index into SPLITS
    source: np.ndarray   # (n,) str, source image (FDDB path or sample id)
    box: np.ndarray      # (n, 4) float32, x0 y0 x1 y1 in the source image
    meta: dict = field(default_factory=dict)  # the sidecar, as written

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of one split: 'train', 'val' or 'test'."""
        keep = self.split == SPLITS.index(name)
        return self.x[keep], self.y[keep]

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.meta["mean"], dtype=np.float32)  # (3,)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.meta["std"], dtype=np.float32)  # (3,)

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]

    @property
    def is_sample(self) -> bool:
        return self.meta.get("source") == "builtin-sample"


def content_hash(x, y, split) -> str:
    h = hashlib.sha256()
    for a in (x, y, split):
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode() + a.dtype.str.encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def train_stats(x, split) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over the train split only, on 0..255 pixel values."""
    train = x[split == 0].astype(np.float64)
    if len(train) == 0:
        raise DataError("no training crops: cannot compute normalization statistics")
    mean = train.mean(axis=(0, 1, 2))
    std = np.maximum(train.std(axis=(0, 1, 2)), 1e-6)
    return [float(v) for v in mean], [float(v) for v in std]


def sidecar_path(npz: Path) -> Path:
    return Path(npz).with_suffix(".json")


def save_crops(path: str | os.PathLike, x, y, split, source, box, meta: dict) -> CropSet:
    """Write `path` (.npz) and its `.json` sidecar atomically; return the saved CropSet.

    `meta` carries what the builder knows (source, seed, folds, iou, ...); counts,
    normalization statistics and the content hash are added here.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise DataError(f"{path}: the output file must end in .npz")
    x = np.asarray(x, dtype=np.uint8)
    y = np.asarray(y, dtype=np.uint8)
    split = np.asarray(split, dtype=np.uint8)
    source = np.asarray(source, dtype=str)
    box = np.asarray(box, dtype=np.float32).reshape(-1, 4)
    if not (len(x) == len(y) == len(split) == len(source) == len(box)):
        raise ValueError("crop arrays differ in length")
    mean, std = train_stats(x, split)
    counts = {
        name: {"face": int(((split == i) & (y == FACE)).sum()),
               "non_face": int(((split == i) & (y == NON_FACE)).sum())}
        for i, name in enumerate(SPLITS)
    }
    meta = {**meta, "counts": counts, "shape": list(x.shape[1:]), "mean": mean, "std": std,
            "content_hash": content_hash(x, y, split)}
    out_dir = path.parent if str(path.parent) else Path(".")
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: output folder does not exist")
    _write(path, lambda tmp: np.savez(tmp, x=x, y=y, split=split, source=source, box=box))
    try:
        _write(sidecar_path(path),
               lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)))
    except BaseException:
        path.unlink(missing_ok=True)  # never leave an .npz without its sidecar
        raise
    return CropSet(x, y, split, source, box, meta)


def read_meta(path: str | os.PathLike) -> dict:
    """The sidecar of a crop file, without loading the arrays."""
    side = sidecar_path(Path(path))
    if not Path(path).is_file() or not side.is_file():
        raise DataError(f"{path}: no such crop file (build one with `facehpo data build`)")
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{side}: not a facehpo sidecar ({e})") from e


def load_crops(path: str | os.PathLike, verify: bool = True) -> CropSet:
    """Load a crop file and its sidecar; with `verify`, check the content hash."""
    path = Path(path)
    side = sidecar_path(path)
    for p in (path, side):
        if not p.is_file():
            raise DataError(f"{p}: no such file (build one with `facehpo data build`)")
    try:
        meta = json.loads(side.read_text())
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x", "y", "split", "source", "box")}
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not a facehpo crop file ({e})") from e
    if verify and content_hash(arrays["x"], arrays["y"], arrays["split"]) != meta.get("content_hash"):
        raise DataError(f"{path}: content does not match the hash in {side.name}")
    return CropSet(**arrays, meta=meta)


def _write(path: Path, write) -> None:
    try:
        atomic_write(path, write)
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from e
