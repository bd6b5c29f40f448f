"""model/sanity.py on the built-in sample (real faces and non-faces), tiny settings.

Every check passes on healthy inputs and each verdict is shown to FAIL on an input
built to fail it, so no check is a rubber stamp.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from dataset.archive import CropSet
from dataset.errors import DataError
from dataset.sample import build_sample
from model import sanity
from model.sanity import CheckResult, SanitySettings

TINY = SanitySettings(samples=40, compare_epochs=3, tiny_lr_epochs=3, huge_lr_epochs=2,
                      overfit_samples=10, overfit_epochs=60)
NAMES = ["initial_loss", "regularization_raises_loss", "normalized_beats_raw",
         "tiny_lr_barely_moves", "huge_lr_diverges", "overfits_small_set"]


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> CropSet:
    return build_sample(tmp_path_factory.mktemp("sample") / "sample.npz")


@pytest.fixture(scope="module")
def data(crops) -> sanity.Subset:
    return sanity.pick(crops, TINY.samples, TINY.seed)


def test_all_checks_pass_on_the_sample(crops):
    seen = []
    results = sanity.run_checks(crops, variant=1, settings=TINY, on_result=seen.append)
    assert [r.name for r in results] == NAMES and seen == results
    failed = [r for r in results if not r.passed]
    assert not failed, sanity.format_table(failed)
    m = {r.name: r.measured for r in results}
    assert abs(m["initial_loss"]["loss"] - np.log(2)) < TINY.loss_tolerance
    assert m["huge_lr_diverges"]["outcome"] == "loss became nan in epoch 1"
    assert 1 <= m["overfits_small_set"]["epochs_needed"] <= TINY.overfit_epochs
    assert m["overfits_small_set"]["samples"] == TINY.overfit_samples
    text = sanity.format_table(results)
    assert text.count("PASS") == 6 and text.endswith("6 of 6 checks passed")
    doc = json.loads(json.dumps(sanity.to_json(results), allow_nan=False))
    assert doc["passed"] is True and [c["name"] for c in doc["checks"]] == NAMES
    assert doc["checks"][4]["measured"]["worst_epoch_loss"] is None  # no epoch completed


def test_initial_loss_fails_on_raw_pixels(data):
    r = sanity.check_initial_loss(replace(data, x=data.raw), TINY)
    assert not r.passed and r.measured["loss"] > np.log(2) + TINY.loss_tolerance


def test_regularization_check_fails_when_reg_adds_nothing(data):
    r = sanity.check_regularization(data, replace(TINY, reg=0.0))
    assert not r.passed and r.measured["loss_reg"] == pytest.approx(r.measured["loss_reg0"])


def test_normalization_check_fails_when_both_inputs_are_raw(data):
    r = sanity.check_normalization(replace(data, x=data.raw), TINY)
    assert not r.passed
    assert r.measured["loss_normalized"] == pytest.approx(r.measured["loss_raw"], rel=0.05)


def test_tiny_lr_check_fails_with_an_ordinary_lr(data):
    r = sanity.check_tiny_lr(data, replace(TINY, tiny_lr=1e-3))
    assert not r.passed and abs(r.measured["relative_change"]) >= TINY.max_change


def test_huge_lr_check_fails_when_the_loss_stays_finite(crops):
    r = sanity.check_huge_lr(crops, replace(TINY, huge_lr=1e-4))
    assert not r.passed and r.measured["outcome"] == "loss stayed finite"
    assert r.measured["epochs_completed"] == TINY.huge_lr_epochs


def test_overfit_check_fails_in_two_epochs(crops):
    small = sanity.pick(crops, TINY.overfit_samples, TINY.seed)
    r = sanity.check_overfit(small, replace(TINY, overfit_epochs=2))
    assert not r.passed and r.measured["epochs_needed"] is None
    assert r.measured["train_accuracy"] < 1.0


def test_pick_is_balanced_and_refuses_one_class(crops):
    s = sanity.pick(crops, 10, seed=3)
    assert list(np.bincount(s.y)) == [5, 5] and s.x.dtype == np.float32
    assert s.raw.max() > 100 and abs(float(s.x.mean())) < 1  # raw 0..255 vs normalized
    faces = crops.y == 1
    only_faces = CropSet(*(a[faces] for a in (crops.x, crops.y, crops.split, crops.source,
                                              crops.box)), meta={**crops.meta,
                                                                 "content_hash": "faces"})
    with pytest.raises(DataError, match="face and non-face"):
        sanity.pick(only_faces, 10)


def test_settings_validation_and_reporting_without_tensorflow():
    with pytest.raises(ValueError, match="overfit_epochs must be > 0"):
        SanitySettings(overfit_epochs=0)
    bad = CheckResult("huge_lr_diverges", False, {"last_loss": float("inf"), "lr": 1e-4},
                      "the loss becomes NaN")
    text = sanity.format_table([bad])
    assert "FAIL" in text and "expected: the loss becomes NaN" in text
    assert text.endswith("0 of 1 checks passed")
    doc = sanity.to_json([bad])
    assert doc["passed"] is False and doc["checks"][0]["measured"]["last_loss"] == "inf"
