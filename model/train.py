"""Fit and evaluate the CNN; results come back as plain frozen objects.

A failure of the run itself (loss became NaN or infinite, out of memory) is not
raised: it comes back as a TrainResult with `fail_reason`, so a worker marks that
trial failed and goes on. Exceptions raised by the caller's callbacks (e.g.
optuna.TrialPruned from the study layer's pruning callback) pass through unchanged.

Reproducibility: `seed_run(seed)` seeds weights, dropout and the shuffle. On the
2-core CPU two runs with the same seed give identical
histories (tests/model checks it on tiny data; 2 epochs on 1,600 crops, both
models, also matched), so `tf.config.experimental.enable_op_determinism()` is
not used: here it changed nothing (4.0 vs 4.1 CPU-s/epoch), on GPU it costs speed
and rejects ops without a deterministic kernel. GPU runs may differ run to run.
"""
from __future__ import annotations

import gc
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf
import keras

from dataset.archive import CropSet
from dataset.pipeline import datasets, normalized, split_dataset
from model import compiled, device
from model.cnn import ModelConfig, build_model
from model.errors import ModelError
from model.saving import inference_model, load_model, save_model

__all__ = ["EpochMetrics", "EvalResult", "ModelError", "TrainConfig", "TrainResult",
           "evaluate", "inference_model", "load_model", "save_model", "train", "train_model"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 20
    seed: int = 0
    progress: bool = False   # one line per epoch on stderr

    def __post_init__(self):
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch size must be an integer >= 1, got {self.batch_size!r}")


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int            # 1-based, as in progress lines and fail reasons
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    history: tuple[EpochMetrics, ...]  # completed epochs only
    fail_reason: str | None
    seconds: float
    device: str

    @property
    def ok(self) -> bool:
        return self.fail_reason is None

    @property
    def val_accuracy(self) -> float | None:
        return self.history[-1].val_accuracy if self.history else None

    @property
    def val_loss(self) -> float | None:
        return self.history[-1].val_loss if self.history else None

    def to_dict(self) -> dict:
        return {"history": [m.to_dict() for m in self.history], "fail_reason": self.fail_reason,
                "seconds": self.seconds, "device": self.device, "epochs": len(self.history),
                "val_accuracy": self.val_accuracy, "val_loss": self.val_loss}


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float                 # cross-entropy + L2 penalty, as Keras reports val_loss
    confusion: tuple[tuple[int, int], tuple[int, int]]  # [[tn, fp], [fn, tp]], rows = true

    def rates(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The confusion matrix with each row divided by its total (0 for an empty row)."""
        return tuple(tuple(c / sum(row) if sum(row) else 0.0 for c in row)
                     for row in self.confusion)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "loss": self.loss,
                "confusion": [list(r) for r in self.confusion]}


class _RetraceNoise(logging.Filter):
    """Every trial builds a new model, so TensorFlow's 'triggered tf.function retracing'
    warning fires on every trial after the fifth; it says nothing about this run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_RetraceNoise())


class _NonFinite(Exception):
    """Raised inside fit by _Recorder; becomes a fail_reason, never leaves this module."""


class _Recorder(keras.callbacks.Callback):
    """Per-epoch metrics, the NaN / inf check and the progress line.

    Only epoch hooks: a batch hook would make Keras sync on every step. Placed first
    in the callback list, so a non-finite epoch stops before other callbacks see it.
    """

    def __init__(self, epochs: int, progress: bool):
        super().__init__()
        self.epochs, self.progress = epochs, progress
        self.history: list[EpochMetrics] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        values = {k: float(logs.get(k, math.nan))
                  for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        for key in ("loss", "val_loss"):
            if not math.isfinite(values[key]):
                word = "nan" if math.isnan(values[key]) else "infinite"
                raise _NonFinite(f"{key} became {word} in epoch {epoch + 1}")
        m = EpochMetrics(epoch + 1, **values, seconds=time.perf_counter() - self._start)
        self.history.append(m)
        if self.progress:
            print(f"epoch {m.epoch}/{self.epochs}  loss {m.loss:.4f}  acc {m.accuracy:.4f}  "
                  f"val_loss {m.val_loss:.4f}  val_acc {m.val_accuracy:.4f}  {m.seconds:.1f}s",
                  file=sys.stderr, flush=True)


def _clear_session() -> None:
    """keras.backend.clear_session, keeping the dtype policy it resets to float32 (a
    mixed-precision policy set by model.device would otherwise last one trial). It
    runs gc.collect() itself: a second collection cost 0.2-0.6 s a trial."""
    policy = keras.mixed_precision.global_policy()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)


def train(crops: CropSet, model_cfg: ModelConfig, train_cfg: TrainConfig,
          callbacks=()) -> TrainResult:
    """Train one configuration on the process's kept compiled model (model/compiled.py:
    no graph tracing after the first run); the trained model is not returned."""
    return _fit(crops, model_cfg, train_cfg, callbacks, keep=True)[0]


def train_model(crops: CropSet, model_cfg: ModelConfig, train_cfg: TrainConfig,
                callbacks=()) -> tuple[TrainResult, keras.Model | None]:
    """(result, trained model) on a model of its own; the model is None when the run failed.

    `callbacks` are extra Keras callbacks, run after the metrics recorder.
    """
    return _fit(crops, model_cfg, train_cfg, callbacks, keep=False)


def _fit(crops: CropSet, model_cfg: ModelConfig, train_cfg: TrainConfig, callbacks,
         keep: bool) -> tuple[TrainResult, keras.Model | None]:
    # One TensorFlow call per epoch (and per validation pass) instead of one per batch:
    # the same histories, ~5 % less CPU per epoch (benchmarks/bench_train.py).
    n_train = len(normalized(crops, "train")[1])  # cached: crops.part would copy the split
    steps = max(1, math.ceil(n_train / train_cfg.batch_size))
    if not (keep and compiled.fits(model_cfg, steps)):
        compiled.forget()
        _new_session()
    registered = _gradient_names()
    seed_run(train_cfg.seed)
    start = time.perf_counter()
    recorder = _Recorder(train_cfg.epochs, train_cfg.progress)
    model, fail = None, None
    try:
        train_ds, val_ds = datasets(crops, train_cfg.batch_size, train_cfg.seed)
        model = (compiled.kept_model(model_cfg, steps) if keep
                 else build_model(model_cfg, steps_per_execution=steps))
        model.fit(train_ds, validation_data=val_ds, epochs=train_cfg.epochs, verbose=0,
                  shuffle=False, callbacks=[recorder, *callbacks])
    except _NonFinite as e:  # the kept model's variables are all reset before its next run
        fail = str(e)
    except tf.errors.ResourceExhaustedError as e:
        fail = "out of memory: " + (str(e.message).strip().splitlines() or ["?"])[0]
        compiled.forget()
    finally:
        _stale_gradients.update(_gradient_names() - registered)
    if fail is not None:
        model = None
        if not compiled.fits(model_cfg, steps):  # a model of its own, or the kept one after OOM
            _clear_session()
    result = TrainResult(tuple(recorder.history), fail,
                         time.perf_counter() - start, device.describe())
    return result, (None if keep else model)


TF_GLOBAL_SEED = 0


def seed_run(seed: int) -> None:
    """Seed one run. Keras draws every weight initializer's and dropout layer's seed
    from Python's `random`, so seeding Python (and NumPy) fixes the model; the tf.data
    shuffle takes `seed` as its op seed. TensorFlow's global seed stays at
    TF_GLOBAL_SEED: setting it (as keras.utils.set_random_seed does) clears
    TensorFlow's kernel cache, which cost every trial's first epoch 0.2-0.3 s."""
    random.seed(seed)
    np.random.seed(seed)
    if tf.compat.v1.random.get_seed(1)[0] != TF_GLOBAL_SEED:  # unset, or changed by others
        tf.random.set_seed(TF_GLOBAL_SEED)


def _new_session() -> None:
    """Drop earlier runs' graphs and weights (and their gradient registrations)."""
    _drop_gradients(_stale_gradients)
    _clear_session()
    # What survived that collection lives on (modules, caches, the crops): freeze it out of
    # later collections, which then scan only this trial's objects (0.14 -> 0.03 s a trial).
    gc.freeze()


# TensorFlow registers a gradient function in a global registry each time a
# tf.custom_gradient is traced (Keras traces two per model) and never removes it;
# each entry pins its whole training graph: +15 MB per trial measured on Model 1.
# The next run forgets the entries the previous runs added (private TensorFlow
# API: if it moves, this does nothing and only the leak remains).
_stale_gradients: set[str] = set()


def _registry() -> dict:
    from tensorflow.python.framework import ops

    return getattr(getattr(ops, "_gradient_registry", None), "_registry", {})


def _gradient_names() -> set[str]:
    return {k for k in _registry() if k.startswith("CustomGradient-")}


def _drop_gradients(names: set[str]) -> None:
    registry = _registry()
    for name in names:
        registry.pop(name, None)
    names.clear()


def evaluate(model: keras.Model, crops: CropSet, split: str = "test", *,
             raw_pixels: bool = False, batch_size: int = 256) -> EvalResult:
    """Accuracy, loss and confusion matrix of `model` on one split.

    `model` takes normalized input (as returned by `train_model`); pass
    raw_pixels=True for a saved / inference model that normalizes itself.
    """
    _, y = crops.part(split)
    ds = split_dataset(crops, split, batch_size, normalize=not raw_pixels)
    probs = model.predict(ds, verbose=0)  # (n, 2) float32
    y = y.astype(np.int64)
    pred = probs.argmax(axis=1)
    confusion = tuple(tuple(int(((y == t) & (pred == p)).sum()) for p in (0, 1))
                      for t in (0, 1))
    ce = float(np.mean(keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y, probs))))
    penalty = float(sum(float(keras.ops.convert_to_numpy(w)) for w in model.losses))
    return EvalResult(float((pred == y).mean()), ce + penalty, confusion)
