"""model/train.py on a tiny synthetic crop file: results, failures, the epoch hook, determinism."""
from __future__ import annotations

import math
import re
import warnings

import pytest
import tensorflow as tf

from model.cnn import ModelConfig
from model.packed import PackedCNN
from model.train import TrainConfig, TrainResult, train, train_model, train_pack

ONE = TrainConfig(epochs=1, batch_size=8)


class Boom(Exception):
    pass


def raise_at(error: Exception):
    """An on_epoch hook that raises `error` at the end of the first epoch."""
    def hook(epoch, shown):
        raise error
    return hook


def metrics(result: TrainResult):
    return [(m.epoch, m.loss, m.accuracy, m.val_loss, m.val_accuracy) for m in result.history]


def test_one_epoch_gives_finite_metrics_and_progress(tiny_crops, capsys):
    result = train(tiny_crops, ModelConfig(), TrainConfig(epochs=1, batch_size=8, progress=True))
    assert result.ok and result.fail_reason is None
    assert [m.epoch for m in result.history] == [1]
    m = result.history[0]
    assert all(math.isfinite(v) for v in (m.loss, m.accuracy, m.val_loss, m.val_accuracy))
    assert result.val_accuracy == m.val_accuracy and result.val_loss == m.val_loss
    assert 0 < m.seconds <= result.seconds
    gpus = tf.config.list_physical_devices("GPU")
    assert result.device.startswith("GPU:0 ") if gpus else result.device == "CPU"
    d = result.to_dict()
    assert d["history"][0] == {"epoch": 1, "loss": m.loss, "accuracy": m.accuracy,
                               "val_loss": m.val_loss, "val_accuracy": m.val_accuracy,
                               "seconds": m.seconds}
    assert d["epochs"] == 1 and d["fail_reason"] is None and d["pruned"] is False
    err = capsys.readouterr().err
    assert re.search(r"^epoch 1/1  loss \d+\.\d+  acc \d\.\d+  val_loss \d+\.\d+  "
                     r"val_acc \d\.\d+  \d+\.\ds$", err, re.M), err


def test_quiet_without_progress(tiny_crops, capsys):
    with warnings.catch_warnings(record=True) as caught:  # e.g. Keras's "shuffle=True ... ignored"
        warnings.simplefilter("always")
        train(tiny_crops, ModelConfig(), ONE)
    captured = capsys.readouterr()
    assert "epoch" not in captured.err and "epoch" not in captured.out.lower()
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []


@pytest.mark.parametrize("variant", [1, 2])
def test_same_seed_same_history(tiny_crops, variant):
    cfg = ModelConfig(variant=variant, reg=1e-3)
    runs = [train(tiny_crops, cfg, TrainConfig(epochs=2, batch_size=8, seed=s, data_seed=d))
            for s, d in ((3, 0), (3, 0), (4, 0), (3, 1))]
    assert metrics(runs[0]) == metrics(runs[1])
    assert metrics(runs[0]) != metrics(runs[2])  # another trial seed: other weights and masks
    assert metrics(runs[0]) != metrics(runs[3])  # another study seed: another data order


@pytest.mark.parametrize("cfg", [ModelConfig(lr=1e6), ModelConfig(variant=2, reg=1e30)])
def test_divergence_is_a_failed_result(tiny_crops, cfg):
    result, model = train_model(tiny_crops, cfg, TrainConfig(epochs=3, batch_size=8))
    assert not result.ok and model is None
    assert re.fullmatch(r"(val_)?loss became (nan|infinite) in epoch [123]", result.fail_reason)
    assert all(math.isfinite(m.loss) and math.isfinite(m.val_loss) for m in result.history)
    assert result.val_accuracy == (result.history[-1].val_accuracy if result.history else None)


def test_epoch_hook_exceptions_pass_through(tiny_crops):
    with pytest.raises(Boom):
        train(tiny_crops, ModelConfig(), ONE, on_epoch=raise_at(Boom()))


def test_the_epoch_hook_sees_every_epoch_and_can_prune(tiny_crops):
    seen = []

    def hook(epoch, shown):
        seen.append((epoch, [m.epoch for m in shown]))
        return {0} if epoch == 2 else ()
    result = train(tiny_crops, ModelConfig(), TrainConfig(epochs=3, batch_size=8), on_epoch=hook)
    assert seen == [(1, [1]), (2, [2])]
    assert result.pruned and result.ok and len(result.history) == 2


def test_out_of_memory_is_a_failed_result(tiny_crops, monkeypatch):
    from model import compiled

    oom = tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[20,60,60,32]\nmore detail")

    def fit(self, *a, **kw):
        raise oom
    monkeypatch.setattr(PackedCNN, "fit", fit)
    results = train_pack(tiny_crops, [(ModelConfig(), 1), (ModelConfig(), 2)], ONE)
    assert [r.fail_reason for r in results] == 2 * [
        "out of memory: OOM when allocating tensor with shape[20,60,60,32]"]
    assert compiled.current() is None  # the next run builds a new model


def test_a_pack_shares_variant_and_dropout(tiny_crops):
    with pytest.raises(ValueError, match="share variant and dropout"):
        train_pack(tiny_crops, [(ModelConfig(), 1), (ModelConfig(variant=2), 2)], ONE)


@pytest.mark.parametrize("kwargs, words", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch size"), (dict(epochs=1.5), "epochs")])
def test_bad_train_config(kwargs, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**kwargs)
