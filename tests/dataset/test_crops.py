"""Crop building: a tiny real FDDB build, the synthetic tree, the split and IoU rules."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

import dataset.archive
from dataset.archive import load_crops, sidecar_path
from dataset.crops import CropConfig, build_fddb, face_boxes, iou
from dataset.errors import DataError
from dataset.fddb import parse_folds

TINY = CropConfig(n_train_face=20, n_train_nonface=20, n_test_face=5, n_test_nonface=5,
                  folds=(1, 2))


@pytest.fixture(scope="module")
def tiny(fddb_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "crops.npz"
    return build_fddb(fddb_root, out, TINY, progress=False), out


def _images_of(crops, split):
    return set(crops.source[crops.split == split])


def _counts(crops):
    return {(int(s), int(y)): int(((crops.split == s) & (crops.y == y)).sum())
            for s in range(3) for y in range(2)}


@pytest.mark.fddb
def test_tiny_real_build_has_the_requested_crops(tiny):
    crops, _ = tiny
    assert crops.x.shape == (50, 60, 60, 3) and crops.x.dtype == np.uint8
    assert _counts(crops) == {(0, 1): 16, (0, 0): 16, (1, 1): 4, (1, 0): 4, (2, 1): 5, (2, 0): 5}
    assert crops.meta["counts"]["val"] == {"face": 4, "non_face": 4}


@pytest.mark.fddb
def test_splits_share_no_source_image(tiny):
    crops, _ = tiny
    for a, b in combinations(range(3), 2):
        assert not _images_of(crops, a) & _images_of(crops, b)
    assert sum(crops.meta["images"].values()) == len(set(crops.source))


@pytest.mark.fddb
def test_crops_follow_the_face_boxes_and_the_iou_rule(tiny, fddb_root):
    crops, _ = tiny
    records = {r.path: r for r in parse_folds(fddb_root, TINY.folds)}
    for x, y, source, box in zip(crops.x, crops.y, crops.source, crops.box):
        rec = records[str(source)]
        with Image.open(rec.image_file(fddb_root)) as im:
            w, h = im.size
            boxes = face_boxes(rec, w, h)
            if y == 1:
                assert any(np.allclose(box, b, atol=1e-3) for b in boxes)
                expected = np.asarray(im.convert("RGB").resize(
                    (60, 60), Image.Resampling.BILINEAR, box=tuple(float(v) for v in box)))
                assert np.abs(x.astype(int) - expected).max() <= 1  # float32 box rounding
            else:
                assert box[2] - box[0] == pytest.approx(box[3] - box[1], abs=1e-3)  # square
                assert box[0] >= 0 and box[1] >= 0 and box[2] <= w + 1e-3 and box[3] <= h + 1e-3
                assert max(iou(box, b) for b in boxes) < TINY.iou_threshold


@pytest.mark.fddb
def test_sidecar_holds_train_only_statistics_and_provenance(tiny, fddb_root):
    crops, out = tiny
    meta = json.loads(sidecar_path(out).read_text())
    train = crops.x[crops.split == 0].astype(np.float64)
    assert meta["mean"] == pytest.approx(train.mean(axis=(0, 1, 2)).tolist())
    assert meta["std"] == pytest.approx(train.std(axis=(0, 1, 2)).tolist())
    assert meta["mean"] != pytest.approx(crops.x.astype(np.float64).mean(axis=(0, 1, 2)).tolist())
    assert meta["source"] == "fddb" and meta["seed"] == 0 and meta["folds"] == [1, 2]
    assert meta["iou_threshold"] == 0.3 and meta["fddb_root"] == str(fddb_root.resolve())
    assert meta["skipped"] == {"degenerate_faces": 0, "bad_images": 0}
    assert load_crops(out).content_hash == crops.content_hash


@pytest.mark.fddb
def test_same_seed_same_file_other_seed_other_file(tiny, fddb_root, tmp_path):
    crops, _ = tiny
    again = build_fddb(fddb_root, tmp_path / "a.npz", TINY, progress=False)
    other = build_fddb(fddb_root, tmp_path / "b.npz", dataclasses.replace(TINY, seed=1),
                       progress=False)
    assert again.content_hash == crops.content_hash
    assert np.array_equal(again.box, crops.box) and np.array_equal(again.source, crops.source)
    assert other.content_hash != crops.content_hash


@pytest.mark.fddb
def test_every_face_of_fold_08_skips_only_the_degenerate_one(fddb_root, tmp_path, caplog):
    usable = sum(len(r.ellipses) for r in parse_folds(fddb_root, [8])) - 1
    cfg = CropConfig(n_train_face=usable - 10, n_train_nonface=8, n_test_face=10,
                     n_test_nonface=2, folds=(8,))
    with caplog.at_level(logging.INFO, logger="dataset.crops"):
        crops = build_fddb(fddb_root, tmp_path / "f8.npz", cfg, progress=False)
    assert crops.meta["skipped"]["degenerate_faces"] == 1
    assert int(crops.y.sum()) == usable
    assert "skipped 1 degenerate faces" in caplog.text


@pytest.mark.fddb
@pytest.mark.slow
def test_default_build_gives_the_reports_counts(fddb_root, tmp_path):
    crops = build_fddb(fddb_root, tmp_path / "crops.npz", CropConfig(), progress=False)
    assert crops.meta["counts"] == {"train": {"face": 800, "non_face": 800},
                                    "val": {"face": 200, "non_face": 200},
                                    "test": {"face": 100, "non_face": 100}}
    for a, b in combinations(range(3), 2):
        assert not _images_of(crops, a) & _images_of(crops, b)


def test_synthetic_build_converts_gray_and_writes_one_pair(fake_fddb, out_dir, cfg_all, capsys):
    crops = build_fddb(fake_fddb.root, out_dir / "c.npz", cfg_all, progress=True)
    assert sorted(p.name for p in out_dir.iterdir()) == ["c.json", "c.npz"]
    assert crops.x.shape == (20, 60, 60, 3)
    gray = crops.x[crops.source == fake_fddb.names[1]]  # image 1 is saved as grayscale
    assert len(gray) == 2 and (gray[..., 0] == gray[..., 2]).all()
    assert np.allclose(crops.box[crops.y == 1], [20, 25, 60, 55])
    assert "FDDB images" in capsys.readouterr().err  # the progress bar goes to stderr


def test_progress_false_prints_nothing(fake_fddb, out_dir, cfg_all, capsys):
    build_fddb(fake_fddb.root, out_dir / "c.npz", cfg_all, progress=False)
    assert capsys.readouterr() == ("", "")


def test_interrupted_write_leaves_no_file(fake_fddb, out_dir, cfg_all, monkeypatch):
    def half_then_interrupt(tmp, **arrays):
        Path(tmp).write_bytes(b"PK\x03\x04 half an npz")
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset.archive.np, "savez", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_fddb(fake_fddb.root, out_dir / "c.npz", cfg_all, progress=False)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("out", ["c.txt", "missing/c.npz"])
def test_bad_output_path_fails_before_any_work(fake_fddb, out_dir, cfg_all, out):
    with pytest.raises(DataError, match="output must be an .npz file in an existing folder"):
        build_fddb(fake_fddb.root, out_dir / out, cfg_all, progress=False)


def test_default_config_matches_the_report():
    cfg = CropConfig()
    assert cfg.quotas() == {0: (800, 800), 1: (200, 200), 2: (100, 100)}
    assert cfg.folds == tuple(range(1, 11)) and cfg.size == 60 and cfg.iou_threshold == 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    assert CropConfig(folds=[3, 1]).folds == (3, 1)


@pytest.mark.parametrize("bad", [
    {"n_train_face": -1}, {"n_test_nonface": 1.5}, {"val_fraction": 1.0}, {"iou_threshold": 0},
    {"size": 4}, {"folds": (0,)}, {"n_train_face": 1, "val_fraction": 0.6},
])
def test_bad_config_raises(bad):
    with pytest.raises(DataError):
        CropConfig(**bad)


@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),
    ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
    ((0, 0, 10, 10), (2, 2, 4, 4), 4 / 100),
])
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
