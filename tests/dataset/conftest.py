"""A tiny synthetic FDDB tree in tmp_path: the real layout, ten small JPEGs, one face each."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset.crops import CropConfig

N_IMAGES = 10
W, H = 120, 100
FACE = "20.000000 15.000000 0.000000 40.000000 40.000000  1"  # box (20, 25, 60, 55)


class FakeFddb:
    """Fold 01 of `n` images; image k's path is at line 3k+1, count 3k+2, face 3k+3."""

    face = FACE

    def __init__(self, root: Path, n: int = N_IMAGES):
        self.root = root
        self.names = [f"2002/01/01/big/img_{k}" for k in range(n)]
        (root / "FDDB-folds").mkdir(parents=True)
        rng = np.random.default_rng(0)
        for k, name in enumerate(self.names):
            f = self.image(k)
            f.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            img = Image.fromarray(pixels)
            (img.convert("L") if k == 1 else img).save(f, "JPEG")  # one grayscale image
        self.fold_file.write_text("".join(f"{p}\n" for p in self.names))
        self.ellipse_file.write_text("".join(f"{p}\n1\n{FACE}\n" for p in self.names))

    @property
    def fold_file(self) -> Path:
        return self.root / "FDDB-folds" / "FDDB-fold-01.txt"

    @property
    def ellipse_file(self) -> Path:
        return self.root / "FDDB-folds" / "FDDB-fold-01-ellipseList.txt"

    def image(self, k: int) -> Path:
        return self.root / "originalPics" / f"{self.names[k]}.jpg"

    def set_line(self, no: int, text: str | bytes) -> None:
        """Replace line `no` (1-based) of the ellipse list; text may be raw bytes."""
        lines = self.ellipse_file.read_bytes().split(b"\n")
        lines[no - 1] = text if isinstance(text, bytes) else text.encode()
        self.ellipse_file.write_bytes(b"\n".join(lines))

    def insert_line(self, no: int, text: str) -> None:
        """Insert `text` so that it becomes line `no`."""
        lines = self.ellipse_file.read_text().split("\n")
        lines.insert(no - 1, text)
        self.ellipse_file.write_text("\n".join(lines))


@pytest.fixture
def fake_fddb(tmp_path) -> FakeFddb:
    return FakeFddb(tmp_path / "fddb")


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def cfg_all() -> CropConfig:
    """Needs every one of the ten faces: 1 test + 2 val + 7 train, and as many non-faces."""
    return CropConfig(n_train_face=9, n_train_nonface=9, n_test_face=1, n_test_nonface=1,
                      val_fraction=0.2, folds=(1,))
