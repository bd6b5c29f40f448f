"""FDDB parsing: the facts in shared/fddb/README.md on the real files, plus ellipse geometry."""
from __future__ import annotations

import math

import pytest

from dataset.errors import DataError
from dataset.fddb import Ellipse, ellipse_problem, parse_folds

IMAGES_PER_FOLD = (290, 285, 274, 302, 298, 302, 279, 276, 259, 280)


@pytest.mark.fddb
def test_all_folds_hold_2845_images_and_5171_faces(fddb_root):
    records = parse_folds(fddb_root)
    assert len(records) == 2845
    assert sum(len(r.ellipses) for r in records) == 5171
    assert len({r.path for r in records}) == 2845
    per_fold = [sum(1 for r in records if r.fold == f) for f in range(1, 11)]
    assert tuple(per_fold) == IMAGES_PER_FOLD


@pytest.mark.fddb
def test_first_face_of_img_591_gives_the_reference_box(fddb_root):
    first = parse_folds(fddb_root, folds=[1])[0]
    assert first.path == "2002/08/11/big/img_591"
    assert first.fold == 1 and first.line == 1 and len(first.ellipses) == 1
    assert first.ellipses[0].box() == pytest.approx((180.05, 41.13, 359.34, 282.43), abs=0.01)
    assert first.image_file(fddb_root).is_file()


@pytest.mark.fddb
def test_fold_08_holds_the_one_degenerate_face(fddb_root):
    records = parse_folds(fddb_root, folds=(8,))
    assert len(records) == 276
    degenerate = [(r, e) for r in records for e in r.ellipses
                  if (e.major, e.minor, e.angle, e.cx, e.cy) == (1, 1, 0, 0, 0)]
    assert len(degenerate) == 1
    record, face = degenerate[0]
    assert record.path == "2002/07/24/big/img_67"
    assert len(record.ellipses) == 7
    assert record.where == f"FDDB-fold-08-ellipseList.txt line {record.line}"
    assert face.line == record.line + 2 + 5  # the sixth face line
    assert face.box() == pytest.approx((-1, -1, 1, 1))


@pytest.mark.parametrize("angle, half_w, half_h", [
    (0.0, 30.0, 20.0),
    (math.pi / 2, 20.0, 30.0),
    (math.pi, 30.0, 20.0),
    (math.pi / 4, math.hypot(30, 20) / math.sqrt(2), math.hypot(30, 20) / math.sqrt(2)),
])
def test_ellipse_box_is_the_axis_aligned_bound(angle, half_w, half_h):
    box = Ellipse(30.0, 20.0, angle, 100.0, 50.0, line=1).box()
    assert box == pytest.approx((100 - half_w, 50 - half_h, 100 + half_w, 50 + half_h))


def test_ellipse_box_contains_every_point_of_the_ellipse():
    e = Ellipse(40.0, 15.0, 0.7, 0.0, 0.0, line=1)
    x0, y0, x1, y1 = e.box()
    ts = [2 * math.pi * i / 3600 for i in range(3600)]
    xs = [e.major * math.cos(t) * math.cos(e.angle) - e.minor * math.sin(t) * math.sin(e.angle)
          for t in ts]
    ys = [e.major * math.cos(t) * math.sin(e.angle) + e.minor * math.sin(t) * math.cos(e.angle)
          for t in ts]
    assert (min(xs), min(ys), max(xs), max(ys)) == pytest.approx((x0, y0, x1, y1), abs=1e-3)


def test_plausible_faces_pass_and_absurd_ones_are_named():
    ok = Ellipse(20, 15, 0.3, 60, 50, line=3)
    assert ellipse_problem(ok) is None and ellipse_problem(ok, 120, 100) is None
    assert ellipse_problem(Ellipse(1, 1, 0, 0, 0, line=3), 120, 100) is None  # FDDB's own
    assert "far outside" in ellipse_problem(Ellipse(20, 15, 0, 60, -51, line=3), 120, 100)
    assert "not positive" in ellipse_problem(Ellipse(0, 15, 0, 60, 50, line=3))


def test_parse_spacing_and_trailing_blank_lines(fake_fddb):
    text = fake_fddb.ellipse_file.read_text().replace("  1\n", "\t 1 \n")
    fake_fddb.ellipse_file.write_text(text + "\n\n")
    records = parse_folds(fake_fddb.root, folds=[1])
    assert [r.path for r in records] == fake_fddb.names
    assert records[4].ellipses[0] == Ellipse(20.0, 15.0, 0.0, 40.0, 40.0, line=15)


@pytest.mark.parametrize("folds", [[0], [11], [1, 1], [], ["x"]])
def test_bad_fold_numbers_raise(fake_fddb, folds):
    with pytest.raises(DataError, match="folds must be"):
        parse_folds(fake_fddb.root, folds=folds)


def test_an_image_listed_in_two_folds_is_an_error(fake_fddb):
    folder = fake_fddb.root / "FDDB-folds"
    (folder / "FDDB-fold-02.txt").write_text(fake_fddb.fold_file.read_text())
    (folder / "FDDB-fold-02-ellipseList.txt").write_text(fake_fddb.ellipse_file.read_text())
    with pytest.raises(DataError, match="FDDB-fold-02-ellipseList.txt line 1: image .* already"):
        parse_folds(fake_fddb.root, folds=[1, 2])
