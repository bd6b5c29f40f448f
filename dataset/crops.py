"""FDDB records + images -> face / non-face crops (CropConfig) -> one .npz with a sidecar.

Face crop: the axis-aligned box of a face ellipse, clipped to the image, resized to
size x size x 3 (grayscale images converted to RGB). A face whose clipped box is under
2 px wide or high (FDDB fold 08 holds one `1 1 0 0 0`) is skipped and counted.

Non-face crop: a random square window whose side is the longer side of a randomly
chosen face box of the same image, kept only when its IoU with every face box of that
image is below `iou_threshold`; at most ATTEMPTS tries per wanted window.

Split rule, by image: the images are shuffled once with the seed and consumed in that
order, first by the test split, then validation, then training. Each image belongs to
exactly one split: it gives that split its face crops (a random subset when fewer are
still needed) and up to as many non-face windows as it has faces, until the split has
its quota; the next image then starts the next split. So no image contributes to two
splits, and test crops come from images that give nothing to training or validation.
Only the images consumed this way are decoded. Same data + same CropConfig -> same file.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dataset.archive import FACE, NON_FACE, SPLITS, CropSet, save_crops
from dataset.errors import DataError
from dataset.fddb import (ALL_FOLDS, ImageRecord, check_folds, ellipse_file, ellipse_problem,
                          parse_folds)

log = logging.getLogger(__name__)
ATTEMPTS = 25        # random windows tried per wanted non-face crop
MIN_SIDE = 2.0       # px; smaller face boxes are degenerate
PHASES = (2, 1, 0)   # split codes in the order images are handed out: test, val, train


@dataclass(frozen=True)
class CropConfig:
    n_train_face: int = 1000      # train + validation face crops
    n_train_nonface: int = 1000
    n_test_face: int = 100
    n_test_nonface: int = 100
    val_fraction: float = 0.2     # of the training crops, per class
    iou_threshold: float = 0.3
    seed: int = 0
    folds: tuple[int, ...] = ALL_FOLDS
    size: int = 60

    def __post_init__(self):
        object.__setattr__(self, "folds", check_folds(self.folds))
        counts = (self.n_train_face, self.n_train_nonface, self.n_test_face, self.n_test_nonface)
        if any(int(n) != n or n < 0 for n in counts):
            raise DataError(f"crop counts must be non-negative integers, got {counts}")
        if not 0 <= self.val_fraction < 1:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 < self.iou_threshold <= 1:
            raise DataError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.size < 8:
            raise DataError(f"crop size must be at least 8 px, got {self.size}")
        if min(self.quotas()[0]) < 1:
            raise DataError("the training split would get no face or no non-face crop")

    def quotas(self) -> dict[int, tuple[int, int]]:
        """split code -> (face crops, non-face crops)."""
        vf = round(self.n_train_face * self.val_fraction)
        vn = round(self.n_train_nonface * self.val_fraction)
        return {0: (self.n_train_face - vf, self.n_train_nonface - vn), 1: (vf, vn),
                2: (self.n_test_face, self.n_test_nonface)}


@dataclass
class _Crops:
    """Crops collected so far, plus what was skipped."""
    x: list = field(default_factory=list)
    y: list = field(default_factory=list)
    split: list = field(default_factory=list)
    source: list = field(default_factory=list)
    box: list = field(default_factory=list)
    images: dict = field(default_factory=lambda: {s: 0 for s in SPLITS})
    degenerate: int = 0
    bad: list = field(default_factory=list)

    def add(self, img: Image.Image, box, label: int, split: int, source: str, size: int):
        crop = img.resize((size, size), Image.Resampling.BILINEAR, box=tuple(box))
        self.x.append(np.asarray(crop, dtype=np.uint8))  # (size, size, 3)
        self.y.append(label)
        self.split.append(split)
        self.source.append(source)
        self.box.append(box)

    def count(self, split: int, label: int) -> int:
        return sum(1 for s, y in zip(self.split, self.y) if s == split and y == label)


def build_fddb(root: str | os.PathLike, out: str | os.PathLike, cfg: CropConfig = CropConfig(),
               skip_bad: bool = False, progress: bool = True) -> CropSet:
    """Parse FDDB at `root`, cut crops per `cfg`, save them to `out` (.npz + .json).

    With `skip_bad`, images that are missing, undecodable, not JPEG or carry implausible
    face values are skipped and counted; structural faults in the fold files still raise.
    """
    root, out = Path(root), Path(out)
    if out.suffix != ".npz" or not out.parent.is_dir():
        raise DataError(f"{out}: output must be an .npz file in an existing folder")
    records = parse_folds(root, cfg.folds)
    crops = _Crops()
    records = _drop_implausible(records, skip_bad, root, crops)
    _check_enough_faces(records, cfg, root)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(records))
    need = {s: list(q) for s, q in cfg.quotas().items()}
    phase = 0
    with tqdm(total=len(order), unit="img", desc="FDDB images", file=sys.stderr,
              disable=not progress) as bar:
        for idx in order:
            while phase < len(PHASES) and need[PHASES[phase]] == [0, 0]:
                phase += 1
            if phase == len(PHASES):
                break
            bar.update(1)
            split = PHASES[phase]
            if _use_image(root, records[idx], split, need[split], rng, cfg, crops, skip_bad):
                crops.images[SPLITS[split]] += 1
            bar.set_postfix(crops=len(crops.y), refresh=False)
        bar.total = bar.n  # the images actually used, so the bar ends at 100 %
    _check_quotas(crops, cfg, root)
    _log_skipped(crops)
    return _save(out, crops, cfg, root)


def _drop_implausible(records, skip_bad, root, crops) -> list[ImageRecord]:
    """Size-free checks (NaN, radii <= 0) on every image, before any decoding."""
    kept = []
    for r in records:
        problem = next(((e, p) for e in r.ellipses if (p := ellipse_problem(e))), None)
        if problem is None:
            kept.append(r)
            continue
        _bad(f"{_line_ref(root, r, problem[0].line)}: {problem[1]} (image {r.path})",
             skip_bad, crops)
    return kept


def _check_enough_faces(records, cfg, root) -> None:
    usable = sum(1 for r in records for e in r.ellipses if _side(e.box()) >= MIN_SIDE)
    wanted = cfg.n_train_face + cfg.n_test_face
    if wanted > usable:
        raise DataError(f"{root}: folds {list(cfg.folds)} hold {usable} usable faces, "
                        f"{wanted} face crops requested")


def _use_image(root, rec, split, need, rng, cfg, crops, skip_bad) -> bool:
    """Cut this image's share of `need` [faces, non-faces] into `crops`; False if skipped."""
    try:
        img = _open_image(root, rec)
    except DataError as e:
        _bad(str(e), skip_bad, crops)
        return False
    w, h = img.size
    boxes = face_boxes(rec, w, h)
    crops.degenerate += len(rec.ellipses) - len(boxes)
    faces = boxes
    if need[0] < len(faces):
        faces = [boxes[i] for i in sorted(rng.choice(len(boxes), need[0], replace=False))]
    windows = _non_face_windows(boxes, w, h, min(need[1], len(boxes)), cfg.iou_threshold, rng)
    for b in faces:
        crops.add(img, b, FACE, split, rec.path, cfg.size)
    for b in windows:
        crops.add(img, b, NON_FACE, split, rec.path, cfg.size)
    need[0] -= len(faces)
    need[1] -= len(windows)
    return bool(faces or windows)


def face_boxes(rec: ImageRecord, width: int, height: int) -> list[tuple]:
    """Face boxes of one image clipped to it, without the degenerate ones (side < 2 px)."""
    boxes = []
    for e in rec.ellipses:
        b = _clip(e.box(), width, height)
        if _side(b) >= MIN_SIDE:
            boxes.append(b)
        else:
            log.debug("%s: degenerate face skipped (%s line %d)", rec.path, ellipse_file(rec.fold),
                      e.line)
    return boxes


def _open_image(root: Path, rec: ImageRecord) -> Image.Image:
    """Decode one image to RGB; DataError naming the file for any fault."""
    f = rec.image_file(root)
    if not f.is_file():
        raise DataError(f"{f}: no such image (listed at {rec.where})")
    try:
        with Image.open(f) as im:
            if im.format not in ("JPEG", "MPO"):
                raise DataError(f"{f}: not a JPEG but {im.format} (listed at {rec.where})")
            im.load()
            img = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"{f}: cannot decode image: {reason} (listed at {rec.where})") from e
    for e in rec.ellipses:
        if problem := ellipse_problem(e, *img.size):
            raise DataError(f"{_line_ref(root, rec, e.line)}: {problem} (image {rec.path})")
    return img


def _non_face_windows(boxes, w, h, want, iou_threshold, rng) -> list[tuple]:
    """Up to `want` square windows inside the image, each with IoU < threshold vs all boxes."""
    found = []
    if not boxes or want == 0:
        return found
    for _ in range(ATTEMPTS * want):
        b = boxes[rng.integers(len(boxes))]
        side = min(max(b[2] - b[0], b[3] - b[1]), w, h)
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
        win = (x0, y0, x0 + side, y0 + side)
        if all(iou(win, f) < iou_threshold for f in boxes):
            found.append(win)
            if len(found) == want:
                break
    return found


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _line_ref(root: Path, rec: ImageRecord, line: int) -> str:
    return f"{root / 'FDDB-folds' / ellipse_file(rec.fold)} line {line}"


def _clip(box, w, h) -> tuple[float, float, float, float]:
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))


def _side(box) -> float:
    return min(box[2] - box[0], box[3] - box[1])


def _bad(message: str, skip_bad: bool, crops: _Crops) -> None:
    if not skip_bad:
        raise DataError(message)
    log.warning("skipped: %s", message)
    crops.bad.append(message)


def _check_quotas(crops: _Crops, cfg: CropConfig, root: Path) -> None:
    short = []
    quotas = cfg.quotas()
    for split in PHASES:
        wanted = quotas[split]
        for label, name, n in ((FACE, "face", wanted[0]), (NON_FACE, "non-face", wanted[1])):
            if (got := crops.count(split, label)) < n:
                short.append(f"{SPLITS[split]} {name} {got}/{n}")
    if short:
        raise DataError(f"{root}: folds {list(cfg.folds)} ran out of images before the "
                        f"crops were complete: {', '.join(short)}")


def _log_skipped(crops: _Crops) -> None:
    log.info("skipped %d degenerate faces (box under %g px) and %d bad images",
             crops.degenerate, MIN_SIDE, len(crops.bad))


def _save(out: Path, crops: _Crops, cfg: CropConfig, root: Path) -> CropSet:
    y, split = np.asarray(crops.y, np.uint8), np.asarray(crops.split, np.uint8)
    order = np.lexsort((1 - y.astype(int), split))  # train, val, test; faces first
    meta = {
        "source": "fddb", "seed": cfg.seed, "folds": list(cfg.folds),
        "iou_threshold": cfg.iou_threshold, "fddb_root": str(root.resolve()),
        "config": {**asdict(cfg), "folds": list(cfg.folds)},
        "images": crops.images,
        "skipped": {"degenerate_faces": crops.degenerate, "bad_images": len(crops.bad)},
        "bad_images": crops.bad[:50],
        "split_rule": "by image: each source image gives crops to one split only",
        "note": "FDDB face / non-face crops (Jain & Learned-Miller, UM-CS-2010-009)",
    }
    return save_crops(out, np.stack(crops.x)[order], y[order], split[order],
                      np.asarray(crops.source)[order], np.asarray(crops.box)[order], meta)
