"""The built-in sample: lfw_subset at 60x60x3, 60/20/20 per class, marked as not FDDB."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dataset.archive import load_crops, sidecar_path
from dataset.sample import build_sample, default_sample_path, ensure_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return build_sample(tmp_path_factory.mktemp("sample") / "sample.npz")


def test_sample_shape_counts_and_labels(sample):
    assert sample.x.shape == (200, 60, 60, 3) and sample.x.dtype == np.uint8
    for name in ("train", "val", "test"):
        n = {"train": 60, "val": 20, "test": 20}[name]
        assert sample.meta["counts"][name] == {"face": n, "non_face": n}
    # lfw_subset holds the faces first: ids 000-099 are faces, 100-199 non-faces.
    ids = np.array([int(s.split(":")[1]) for s in sample.source])
    assert ((ids < 100) == (sample.y == 1)).all() and len(set(ids)) == 200


def test_sample_is_gray_upscaled_to_rgb(sample):
    from skimage.data import lfw_subset

    assert (sample.x[..., 0] == sample.x[..., 1]).all()
    original = lfw_subset()[int(sample.source[0].split(":")[1])] * 255  # (25, 25)
    back = Image.fromarray(sample.x[0]).convert("L").resize((25, 25), Image.Resampling.BILINEAR)
    assert np.abs(np.asarray(back, dtype=float) - original).mean() < 6


def test_sample_says_it_is_not_fddb(sample):
    assert sample.is_sample and sample.meta["source"] == "builtin-sample"
    assert "NOT FDDB" in sample.meta["note"]


def test_sample_is_deterministic_per_seed(sample, tmp_path):
    assert build_sample(tmp_path / "a.npz").content_hash == sample.content_hash
    assert build_sample(tmp_path / "b.npz", seed=1).content_hash != sample.content_hash


def test_default_sample_path_follows_facehpo_home(monkeypatch, tmp_path):
    monkeypatch.delenv("FACEHPO_HOME", raising=False)
    assert str(default_sample_path()).endswith(".cache/facehpo/sample.npz")
    monkeypatch.setenv("FACEHPO_HOME", str(tmp_path / "home"))
    assert default_sample_path() == tmp_path / "home" / "sample.npz"


def test_ensure_sample_builds_once_and_repairs(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEHPO_HOME", str(tmp_path / "home"))
    path = ensure_sample()
    assert path == tmp_path / "home" / "sample.npz" and load_crops(path).is_sample
    stamp = path.stat().st_mtime_ns
    assert ensure_sample() == path and path.stat().st_mtime_ns == stamp
    sidecar_path(path).unlink()  # damaged: rebuilt
    assert ensure_sample() == path and load_crops(path).is_sample
    assert sorted(p.name for p in path.parent.iterdir()) == ["sample.json", "sample.npz"]
