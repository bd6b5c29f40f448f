"""model/train.py on a tiny synthetic crop file: results, failures, callbacks, determinism."""
from __future__ import annotations

import math
import re

import keras
import optuna
import pytest
import tensorflow as tf
from optuna_integration.keras import KerasPruningCallback

from model.cnn import ModelConfig
from model.train import TrainConfig, TrainResult, train, train_model

ONE = TrainConfig(epochs=1, batch_size=8)


class Boom(Exception):
    pass


class RaiseAt(keras.callbacks.Callback):
    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def on_epoch_end(self, epoch, logs=None):
        raise self.error


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
    assert d["epochs"] == 1 and d["fail_reason"] is None
    err = capsys.readouterr().err
    assert re.search(r"^epoch 1/1  loss \d+\.\d+  acc \d\.\d+  val_loss \d+\.\d+  "
                     r"val_acc \d\.\d+  \d+\.\ds$", err, re.M), err


def test_quiet_without_progress(tiny_crops, capsys):
    train(tiny_crops, ModelConfig(), ONE)
    captured = capsys.readouterr()
    assert "epoch" not in captured.err and "epoch" not in captured.out.lower()


@pytest.mark.parametrize("variant", [1, 2])
def test_same_seed_same_history(tiny_crops, variant):
    cfg = ModelConfig(variant=variant, reg=1e-3)
    runs = [train(tiny_crops, cfg, TrainConfig(epochs=2, batch_size=8, seed=s)) for s in (3, 3, 4)]
    assert metrics(runs[0]) == metrics(runs[1])
    assert metrics(runs[0]) != metrics(runs[2])


@pytest.mark.parametrize("cfg", [ModelConfig(lr=1e6), ModelConfig(variant=2, reg=1e30)])
def test_divergence_is_a_failed_result(tiny_crops, cfg):
    result, model = train_model(tiny_crops, cfg, TrainConfig(epochs=3, batch_size=8))
    assert not result.ok and model is None
    assert re.fullmatch(r"(val_)?loss became (nan|infinite) in epoch [123]", result.fail_reason)
    assert all(math.isfinite(m.loss) and math.isfinite(m.val_loss) for m in result.history)
    assert result.val_accuracy == (result.history[-1].val_accuracy if result.history else None)


def test_callback_exceptions_pass_through(tiny_crops):
    with pytest.raises(Boom):
        train(tiny_crops, ModelConfig(), ONE, callbacks=[RaiseAt(Boom())])


def test_optuna_pruning_propagates(tiny_crops):
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned):
        train(tiny_crops, ModelConfig(), ONE,
              callbacks=[KerasPruningCallback(trial, "val_accuracy")])
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0]


def test_out_of_memory_is_a_failed_result(tiny_crops):
    oom = tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[20,60,60,32]\nmore detail")
    result = train(tiny_crops, ModelConfig(), ONE, callbacks=[RaiseAt(oom)])
    assert result.fail_reason == "out of memory: OOM when allocating tensor with shape[20,60,60,32]"


@pytest.mark.parametrize("kwargs, words", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch size"), (dict(epochs=1.5), "epochs")])
def test_bad_train_config(kwargs, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**kwargs)


def test_runs_do_not_pile_up_gradient_registrations(tiny_crops):
    # each run's tf.custom_gradient entries pin its graph (~15 MB a trial) unless dropped
    from model.train import _gradient_names

    # (train_model: a new model each run; train's kept model traces once per process)
    before = _gradient_names()  # other tests in this process may have traced models outside train
    train_model(tiny_crops, ModelConfig(), ONE)
    after_one = _gradient_names() - before
    assert after_one, "TensorFlow's gradient registry moved: re-check the leak workaround"
    train_model(tiny_crops, ModelConfig(variant=2), ONE)
    train_model(tiny_crops, ModelConfig(), ONE)
    now = _gradient_names() - before
    assert len(now) <= len(after_one)
    assert not after_one & now
