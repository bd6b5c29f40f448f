"""Bad FDDB input -> one-line DataError naming the file and line (or image), no output left."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from dataset.crops import build_fddb
from dataset.errors import DataError


def _truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _png(f):
    Image.new("RGB", (120, 100), "white").save(f, "PNG")


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable  # (FakeFddb, k) -> None; k = the image to spoil
    expect: str       # substring of the message, "{k}" filled in
    skippable: bool = False  # a bad image that skip_bad=True skips
    cfg: dict = field(default_factory=dict)
    root: str = ""    # build from root / this instead


# Image k: path at line 3k+1, face count at 3k+2, face line at 3k+3 of the ellipse list.
CASES = [
    Case("root missing", lambda t, k: None, "nope: FDDB root folder does not exist", root="nope"),
    Case("fold list missing", lambda t, k: t.fold_file.unlink(),
         "FDDB-fold-01.txt: no such fold file"),
    Case("ellipse list missing", lambda t, k: t.ellipse_file.unlink(),
         "FDDB-fold-01-ellipseList.txt: no such fold file"),
    Case("requested fold missing", lambda t, k: None, "FDDB-fold-02.txt: no such fold file",
         cfg={"folds": (1, 2)}),
    Case("image missing", lambda t, k: t.image(k).unlink(), "img_{k}.jpg: no such image", True),
    Case("image truncated", lambda t, k: _truncate(t.image(k)), "img_{k}.jpg: cannot decode", True),
    Case("image is a PNG", lambda t, k: _png(t.image(k)), "img_{k}.jpg: not a JPEG but PNG", True),
    Case("image is text", lambda t, k: t.image(k).write_text("hello"),
         "img_{k}.jpg: cannot decode", True),
    Case("face line 5 fields", lambda t, k: t.set_line(3 * k + 3, "20 15 0 40 40"),
         "ellipseList.txt line {l}: face line has 5 fields"),
    Case("face line 7 fields", lambda t, k: t.set_line(3 * k + 3, t.face + " 1"),
         "ellipseList.txt line {l}: face line has 7 fields"),
    Case("face line non-number", lambda t, k: t.set_line(3 * k + 3, "20 15 zero 40 40 1"),
         "ellipseList.txt line {l}: face line holds a non-number"),
    Case("non-UTF-8 path", lambda t, k: t.set_line(3 * k + 1, b"2002/01/01/big/img_\xff"),
         "ellipseList.txt line {p}: not UTF-8"),
    Case("NaN radius", lambda t, k: t.set_line(3 * k + 3, "nan 15 0 40 40 1"),
         "ellipseList.txt line {l}: non-finite", True),
    Case("infinite centre", lambda t, k: t.set_line(3 * k + 3, "20 15 0 inf 40 1"),
         "ellipseList.txt line {l}: non-finite", True),
    Case("negative radius", lambda t, k: t.set_line(3 * k + 3, "-20 15 0 40 40 1"),
         "ellipseList.txt line {l}: radius not positive", True),
    Case("centre far outside", lambda t, k: t.set_line(3 * k + 3, "20 15 0 400 40 1"),
         "ellipseList.txt line {l}: centre (400, 40) far outside the 120x100 image", True),
    Case("radius absurd", lambda t, k: t.set_line(3 * k + 3, "900 15 0 40 40 1"),
         "ellipseList.txt line {l}: radius 900 absurd", True),
    Case("count says 3, 1 face follows", lambda t, k: t.set_line(3 * k + 2, "3"),
         "ellipseList.txt line {c}: count says 3 faces, but face lines stop after 1"),
    Case("count says 1, 2 faces follow", lambda t, k: t.insert_line(3 * k + 4, t.face),
         "ellipseList.txt line {n}: expected an image path, found 6 fields "
         "(face count at line {c} says 1"),
    Case("count not a number", lambda t, k: t.set_line(3 * k + 2, "one"),
         "ellipseList.txt line {c}: expected a face count"),
    Case("file ends after a path", lambda t, k: t.insert_line(31, "2002/01/01/big/img_x"),
         "ellipseList.txt line 31: image 2002/01/01/big/img_x has no face-count line"),
    Case("empty fold", lambda t, k: (t.fold_file.write_text(""), t.ellipse_file.write_text("")),
         "ellipseList.txt: no images (empty fold)"),
    Case("fold list names an unknown image",
         lambda t, k: t.fold_file.write_text(t.fold_file.read_text() + "2002/01/01/big/img_y\n"),
         "FDDB-fold-01.txt line 11: image 2002/01/01/big/img_y has no entry"),
    Case("path escapes originalPics", lambda t, k: t.set_line(3 * k + 1, "../../etc/passwd"),
         "ellipseList.txt line {p}: image path '../../etc/passwd' leaves originalPics/"),
    Case("more faces than the data", lambda t, k: None,
         "hold 10 usable faces, 21 face crops requested", cfg={"n_train_face": 20}),
    Case("more non-faces than the data", lambda t, k: None,
         "ran out of images before the crops were complete: val non-face 9/40, train face 0/7",
         cfg={"n_train_nonface": 200}),
]

STRICT = [pytest.param(c, False, id=c.id) for c in CASES] + [
    pytest.param(c, True, id=f"{c.id} (skip_bad)") for c in CASES if not c.skippable]


def _expected(case: Case, k: int) -> str:
    return case.expect.format(k=k, p=3 * k + 1, c=3 * k + 2, l=3 * k + 3, n=3 * k + 4)


@pytest.mark.parametrize("case, skip_bad", STRICT)
def test_bad_input_raises_one_line_and_leaves_nothing(case, skip_bad, fake_fddb, out_dir, cfg_all):
    k = 3
    case.mutate(fake_fddb, k)
    root = fake_fddb.root / case.root if case.root else fake_fddb.root
    with pytest.raises(DataError) as err:
        build_fddb(root, out_dir / "crops.npz", dataclasses.replace(cfg_all, **case.cfg),
                   skip_bad=skip_bad, progress=False)
    message = str(err.value)
    assert _expected(case, k) in message
    assert "\n" not in message
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES if c.skippable])
def test_skip_bad_skips_the_image_and_counts_it(case, fake_fddb, out_dir, cfg_all, caplog):
    # Spoil the image the seed hands out first, so the build surely meets it; the nine
    # good images are then all needed: 1 test + 8 training faces and non-faces.
    k = int(np.random.default_rng(cfg_all.seed).permutation(10)[0])
    case.mutate(fake_fddb, k)
    cfg = dataclasses.replace(cfg_all, n_train_face=8, n_train_nonface=8)
    with caplog.at_level(logging.WARNING, logger="dataset.crops"):
        crops = build_fddb(fake_fddb.root, out_dir / "crops.npz", cfg, skip_bad=True,
                           progress=False)
    assert crops.meta["skipped"]["bad_images"] == 1
    assert _expected(case, k) in crops.meta["bad_images"][0]
    assert fake_fddb.names[k] not in set(crops.source)
    assert len(crops.y) == 18
    assert any("skipped" in r.message and f"img_{k}" in r.message for r in caplog.records)
