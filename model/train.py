"""Fit and evaluate the CNN, K trials at a time; results come back as plain frozen objects.

One trainer: `train_pack` trains K configurations as one packed model
(model/packed.py); `train` and `train_model` are the same run with K = 1. A failure of
one trial's run (its loss became NaN or infinite) is not raised: that slice is stopped
at the end of the epoch and its TrainResult carries `fail_reason`; the other slices go
on, bit for bit as before. Out of memory fails every slice of the pack. Exceptions
raised by the caller's `on_epoch` hook (a signal, a lost database) pass through.

Seeding (changed with packing; histories of earlier runs changed once):
- the data order of epoch e is NumPy's permutation from (TrainConfig.data_seed, e):
  the study's seed, the same for every trial of the study;
- a trial's initial weights come from NumPy's PCG64 seeded with (trial seed, layer),
  its dropout masks from a Keras SeedGenerator seeded with the trial seed;
so a trial's history is the same alone or in a pack of any size (to floating-point
noise: conv1's K x 32 filters may sum in another order), and the model is fed from
NumPy under TensorFlow or JAX. On the 2-core CPU two runs with the same seeds give
identical histories (tests/model); op determinism is not enabled (it cost speed on GPU
and rejects ops without a deterministic kernel), so GPU runs may differ run to run.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import keras

from dataset.archive import CropSet
from dataset.pipeline import normalized, ordered_batches, split_dataset
from model import compiled
from model.cnn import ModelConfig
from model.errors import ModelError
from model.packed import extract, initial_slice, reset_optimizer, slice_ce_acc, stop_slice
from model.saving import inference_model, load_model, save_model

__all__ = ["EpochMetrics", "EvalResult", "ModelError", "TrainConfig", "TrainResult",
           "evaluate", "inference_model", "load_model", "save_model", "train", "train_model",
           "train_pack"]

OnEpoch = Callable[[int, list], Iterable[int]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 20
    seed: int = 0            # the trial's seed (weights, dropout) in train / train_model
    progress: bool = False   # one line per epoch (and slice) on stderr
    data_seed: int = 0       # the study's seed: the data order of every epoch

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
    seconds: float         # the whole pack's wall time
    device: str
    pruned: bool = False   # stopped by the caller's on_epoch hook

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
                "val_accuracy": self.val_accuracy, "val_loss": self.val_loss,
                "pruned": self.pruned}


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


def train(crops: CropSet, model_cfg: ModelConfig, train_cfg: TrainConfig,
          on_epoch: OnEpoch | None = None) -> TrainResult:
    """One configuration (seed train_cfg.seed): `train_pack` with K = 1."""
    return train_pack(crops, [(model_cfg, train_cfg.seed)], train_cfg, on_epoch)[0]


def train_model(crops: CropSet, model_cfg: ModelConfig, train_cfg: TrainConfig,
                on_epoch: OnEpoch | None = None) -> tuple[TrainResult, keras.Model | None]:
    """(result, the trained plain model), the model None when the run failed. The model is
    the report's network (model/cnn.py) taken out of the K = 1 pack, taking normalized input."""
    results, pack = _run(crops, [(model_cfg, train_cfg.seed)], train_cfg, on_epoch)
    ok = results[0].ok and not results[0].pruned
    return results[0], (extract(pack, 0, model_cfg) if ok else None)


def train_pack(crops: CropSet, members: Sequence[tuple[ModelConfig, int]], train_cfg: TrainConfig,
               on_epoch: OnEpoch | None = None, conv: str = "auto") -> list[TrainResult]:
    """Train K = len(members) (config, trial seed) pairs together, one result each.

    The configs must share variant and dropout (they fix the graph); lr and reg are per
    slice. `on_epoch(epoch, metrics)` is called after every epoch with one EpochMetrics
    per slot (None for a slot already stopped) and returns the slots to stop as pruned.
    epochs, batch size and data_seed come from `train_cfg` (its `seed` is unused here)."""
    return _run(crops, members, train_cfg, on_epoch, conv)[0]


def _run(crops, members, train_cfg: TrainConfig, on_epoch, conv: str = "auto"):
    cfgs = [m for m, _ in members]
    if not cfgs:
        raise ValueError("a pack needs at least one configuration")
    if len({(c.variant, c.dropout) for c in cfgs}) > 1:
        raise ValueError("a pack's configurations must share variant and dropout")
    k, start = len(cfgs), time.perf_counter()
    x, y = normalized(crops, "train")
    xv, yv = normalized(crops, "val")
    steps = max(1, math.ceil(len(y) / train_cfg.batch_size))
    pack = reset_pack(compiled.kept_pack(k, cfgs[0].variant, cfgs[0].dropout, steps, conv), members)
    hist: list[list[EpochMetrics]] = [[] for _ in cfgs]
    fail: list[str | None] = [None] * k
    pruned = [False] * k
    live = set(range(k))
    for epoch in range(1, train_cfg.epochs + 1):
        t0 = time.perf_counter()
        order = epoch_order(train_cfg.data_seed, epoch, len(y))
        try:
            if keras.backend.backend() == "tensorflow":  # the inline tf.data feed (dataset/pipeline.py)
                pack.fit(ordered_batches(crops, "train", order, train_cfg.batch_size), epochs=1,
                         shuffle=False, verbose=0)  # already in the epoch's order
                probs = pack.predict(split_dataset(crops, "val", train_cfg.batch_size), verbose=0)
            else:  # NumPy, batch by batch: no feed thread either
                pack.fit(x[order], y[order], batch_size=train_cfg.batch_size, epochs=1,
                         shuffle=False, verbose=0)
                probs = pack.predict(xv, batch_size=train_cfg.batch_size, verbose=0)
        except Exception as e:
            if not _out_of_memory(e):
                raise
            compiled.forget()
            reason = "out of memory: " + (str(e).strip().splitlines() or ["?"])[0]
            fail = [fail[i] or (reason if i in live else None) for i in range(k)]
            live = set()
            break
        penalty = keras.ops.convert_to_numpy(pack.reg * pack.penalty())
        loss = keras.ops.convert_to_numpy(pack.train_ce.result()) + penalty
        acc = keras.ops.convert_to_numpy(pack.train_acc.result())
        vce, vcorrect = (keras.ops.convert_to_numpy(a) for a in slice_ce_acc(yv, probs))
        val_loss, val_acc = vce.mean(axis=0) + penalty, vcorrect.mean(axis=0)
        seconds = time.perf_counter() - t0
        shown: list[EpochMetrics | None] = [None] * k
        for i in sorted(live):
            bad = next((f"{name} became {'nan' if math.isnan(v) else 'infinite'} in epoch {epoch}"
                        for name, v in (("loss", loss[i]), ("val_loss", val_loss[i]))
                        if not math.isfinite(v)), None)
            if bad:
                fail[i] = bad
                continue
            shown[i] = EpochMetrics(epoch, float(loss[i]), float(acc[i]), float(val_loss[i]),
                                    float(val_acc[i]), seconds)
            hist[i].append(shown[i])
        stop = {i for i in live if fail[i]}
        if on_epoch is not None:
            prune = {int(i) for i in on_epoch(epoch, shown)} & (live - stop)
            for i in prune:
                pruned[i] = True
            stop |= prune
        for i in stop:
            stop_slice(pack, i)
        live -= stop
        if train_cfg.progress:
            _progress(epoch, train_cfg.epochs, shown, fail, pruned, stop, k)
        if not live:
            break
    seconds, where = time.perf_counter() - start, describe_device()
    results = [TrainResult(tuple(h), f, seconds, where, p) for h, f, p in zip(hist, fail, pruned)]
    return results, pack


def reset_pack(pack, members: Sequence[tuple[ModelConfig, int]]):
    """`pack` as a new one would start `members`: every slice's initial weights, L2 factor
    and dropout seed from its (config, seed); Adam's state zeroed, the slices' lrs set."""
    pack.load([initial_slice(c.variant, seed) for c, seed in members],
              [c.reg for c, _ in members], [seed for _, seed in members])
    reset_optimizer(pack, [c.lr for c, _ in members])
    return pack


def epoch_order(data_seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training crops in `epoch` (1-based): the study's seed and the
    epoch decide it, never the trial, so every slice of every pack sees the same batches."""
    return np.random.default_rng([data_seed % 2 ** 63, epoch]).permutation(n)


def _out_of_memory(e: Exception) -> bool:
    return type(e).__name__ == "ResourceExhaustedError" or "RESOURCE_EXHAUSTED" in str(e)


def _progress(epoch, epochs, shown, fail, pruned, stop, k) -> None:
    for i, m in enumerate(shown):
        tag = f"[slot {i}] " if k > 1 else ""
        if m is not None:
            print(f"{tag}epoch {m.epoch}/{epochs}  loss {m.loss:.4f}  acc {m.accuracy:.4f}  "
                  f"val_loss {m.val_loss:.4f}  val_acc {m.val_accuracy:.4f}  {m.seconds:.1f}s"
                  + ("  pruned" if pruned[i] and i in stop else ""), file=sys.stderr, flush=True)
        elif i in stop and fail[i]:
            print(f"{tag}epoch {epoch}/{epochs}  failed: {fail[i]}", file=sys.stderr, flush=True)


def describe_device() -> str:
    """"CPU" or the accelerator, under either backend."""
    if keras.backend.backend() == "jax":
        import jax

        d = jax.devices()[0]
        return "CPU" if d.platform == "cpu" else f"{d.platform.upper()}:{d.id} {d.device_kind}"
    from model import device

    return device.describe()


def evaluate(model: keras.Model, crops: CropSet, split: str = "test", *,
             raw_pixels: bool = False, batch_size: int = 256) -> EvalResult:
    """Accuracy, loss and confusion matrix of `model` on one split.

    `model` takes normalized input (as returned by `train_model`); pass
    raw_pixels=True for a saved / inference model that normalizes itself.
    """
    if raw_pixels:
        x, y = crops.part(split)
        x = x.astype(np.float32)
    else:
        x, y = normalized(crops, split)
    probs = model.predict(x, batch_size=batch_size, verbose=0)  # (n, 2) float32
    y = y.astype(np.int64)
    pred = probs.argmax(axis=1)
    confusion = tuple(tuple(int(((y == t) & (pred == p)).sum()) for p in (0, 1))
                      for t in (0, 1))
    ce = float(np.mean(keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y, probs))))
    penalty = float(sum(float(keras.ops.convert_to_numpy(w)) for w in model.losses))
    return EvalResult(float((pred == y).mean()), ce + penalty, confusion)
