"""FDDB fold + ellipse files -> ImageRecord list (pure parsing: no images decoded here).

Layout under the FDDB root, as the official archives unpack:

    FDDB-folds/FDDB-fold-01.txt              one image path per line
    FDDB-folds/FDDB-fold-01-ellipseList.txt  path line, face-count line, one line per face
    originalPics/2002/08/11/big/img_591.jpg  the image (fold paths carry no prefix, no .jpg)

A face line is `major_radius minor_radius angle center_x center_y 1` (angle in radians,
spacing varies). Structural faults (missing files, wrong field counts, non-numbers,
counts that disagree with the face lines, non-UTF-8 bytes, empty folds) raise DataError
naming the file and line. Implausible values (NaN, negative radii, a centre far outside
the image) are per-image faults: `ellipse_problem` names them, and the crop builder
either raises or skips the image.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from dataset.errors import DataError

ALL_FOLDS = tuple(range(1, 11))
FIELDS = 6  # major minor angle cx cy 1


@dataclass(frozen=True)
class Ellipse:
    major: float  # semi-axis along `angle`, px
    minor: float
    angle: float  # radians
    cx: float
    cy: float
    line: int     # 1-based line in the ellipse list

    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box (x0, y0, x1, y1), not clipped to the image."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        hw = math.hypot(self.major * c, self.minor * s)
        hh = math.hypot(self.major * s, self.minor * c)
        return (self.cx - hw, self.cy - hh, self.cx + hw, self.cy + hh)


@dataclass(frozen=True)
class ImageRecord:
    path: str                       # e.g. '2002/08/11/big/img_591'
    fold: int                       # 1..10
    ellipses: tuple[Ellipse, ...]
    line: int = 0                   # line of `path` in the ellipse list

    @property
    def where(self) -> str:
        """'FDDB-fold-01-ellipseList.txt line 5': where this image is described."""
        return f"{ellipse_file(self.fold)} line {self.line}"

    def image_file(self, root: str | os.PathLike) -> Path:
        return Path(root) / "originalPics" / f"{self.path}.jpg"


def fold_file(fold: int) -> str:
    return f"FDDB-fold-{fold:02d}.txt"


def ellipse_file(fold: int) -> str:
    return f"FDDB-fold-{fold:02d}-ellipseList.txt"


def parse_folds(root: str | os.PathLike, folds=ALL_FOLDS) -> list[ImageRecord]:
    """All images of `folds` in file order; raise DataError on any structural fault."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: FDDB root folder does not exist")
    records: list[ImageRecord] = []
    seen: dict[str, str] = {}
    for fold in check_folds(folds):
        fold_records = _parse_fold(root, fold)
        for r in fold_records:
            if r.path in seen:
                raise DataError(f"{root / 'FDDB-folds' / ellipse_file(fold)} line {r.line}: "
                                f"image {r.path} already listed in {seen[r.path]}")
            seen[r.path] = r.where
        records.extend(fold_records)
    return records


def check_folds(folds) -> tuple[int, ...]:
    try:
        folds = tuple(int(f) for f in folds)
    except (TypeError, ValueError) as e:
        raise DataError(f"folds must be integers 1..10, got {folds!r}") from e
    bad = [f for f in folds if f not in ALL_FOLDS]
    if bad or not folds or len(set(folds)) != len(folds):
        raise DataError(f"folds must be distinct integers 1..10, got {list(folds)}")
    return folds


def ellipse_problem(e: Ellipse, width: int | None = None, height: int | None = None) -> str | None:
    """Why this face annotation is implausible, or None. Size checks need the image size."""
    values = (e.major, e.minor, e.angle, e.cx, e.cy)
    if not all(math.isfinite(v) for v in values):
        return "non-finite number in face line"
    if e.major <= 0 or e.minor <= 0:
        return f"radius not positive ({e.major:g}, {e.minor:g})"
    if width is None or height is None:
        return None
    # FDDB's own centres all lie inside the image; half an image outside is absurd.
    if not (-width / 2 <= e.cx <= 1.5 * width and -height / 2 <= e.cy <= 1.5 * height):
        return f"centre ({e.cx:g}, {e.cy:g}) far outside the {width}x{height} image"
    if max(e.major, e.minor) > 2 * max(width, height):
        return f"radius {max(e.major, e.minor):g} absurd for a {width}x{height} image"
    return None


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such fold file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x})") from e
    return text.splitlines()


def _parse_fold(root: Path, fold: int) -> list[ImageRecord]:
    folder = root / "FDDB-folds"
    listed = [(n, s.strip()) for n, s in enumerate(_read_lines(folder / fold_file(fold)), 1)
              if s.strip()]
    ell_path = folder / ellipse_file(fold)
    records = _parse_ellipses(ell_path, _read_lines(ell_path), fold)
    if not records:
        raise DataError(f"{ell_path}: no images (empty fold)")
    described = {r.path for r in records}
    for n, p in listed:
        if p not in described:
            raise DataError(f"{folder / fold_file(fold)} line {n}: image {p} has no entry "
                            f"in {ell_path.name}")
    if len(listed) != len(records):
        raise DataError(f"{folder / fold_file(fold)}: lists {len(listed)} images, "
                        f"{ell_path.name} describes {len(records)}")
    return records


def _parse_ellipses(path: Path, lines: list[str], fold: int) -> list[ImageRecord]:
    """State machine over `path line, count line, count face lines` blocks."""
    records = []
    i, n = 0, len(lines)
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        path_no, image = i + 1, lines[i].strip()
        _check_path_line(path, path_no, image, records[-1] if records else None)
        if i + 1 >= n:
            raise DataError(f"{path} line {path_no}: image {image} has no face-count line")
        count_no, count = i + 2, _parse_count(path, i + 2, lines[i + 1])
        faces = []
        for k in range(count):
            j = i + 2 + k
            if j >= n or len(lines[j].split()) == 1:
                raise DataError(f"{path} line {count_no}: count says {count} faces, "
                                f"but face lines stop after {k}")
            faces.append(_parse_face(path, j + 1, lines[j]))
        records.append(ImageRecord(image, fold, tuple(faces), path_no))
        i += 2 + count
    return records


def _check_path_line(path: Path, no: int, text: str, previous: ImageRecord | None) -> None:
    fields = text.split()
    if len(fields) != 1:
        hint = (f" (face count at line {previous.line + 1} says {len(previous.ellipses)}: "
                f"too small?)" if previous and len(fields) == FIELDS else "")
        raise DataError(f"{path} line {no}: expected an image path, found {len(fields)} "
                        f"fields{hint}")
    if text.startswith("/") or ".." in text.split("/"):
        raise DataError(f"{path} line {no}: image path {text!r} leaves originalPics/")
    try:
        float(text)
    except ValueError:
        return
    raise DataError(f"{path} line {no}: expected an image path, found the number {text}")


def _parse_count(path: Path, no: int, text: str) -> int:
    try:
        count = int(text.strip())
    except ValueError:
        raise DataError(f"{path} line {no}: expected a face count, "
                        f"found {text.strip()!r}") from None
    if count < 0:
        raise DataError(f"{path} line {no}: negative face count {count}")
    return count


def _parse_face(path: Path, no: int, text: str) -> Ellipse:
    fields = text.split()
    if len(fields) != FIELDS:
        raise DataError(f"{path} line {no}: face line has {len(fields)} fields, "
                        f"expected {FIELDS} (major minor angle cx cy 1)")
    try:
        a, b, t, cx, cy, _ = (float(f) for f in fields)
    except ValueError:
        raise DataError(f"{path} line {no}: face line holds a non-number: "
                        f"{text.strip()!r}") from None
    return Ellipse(a, b, t, cx, cy, no)
