"""Seconds per epoch of Model 1: Keras fit on NumPy arrays vs the tf.data pipeline.

    python -m model.bench [--crops 1600] [--epochs 4] [--reps 2]

Both feeds run in the same process, alternating, on the same synthetic crops
(n train + n/4 val, batch 20); the first epoch of each run (tracing) is left out.
Prints one JSON line per run with wall and CPU seconds per epoch and the load
average, because on a shared machine the wall clock measures the neighbours too.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import keras

from dataset.archive import CropSet, content_hash
from dataset.pipeline import datasets, normalized
from model.cnn import ModelConfig, build_model


def synthetic(n_train: int, seed: int = 0) -> CropSet:
    rng = np.random.default_rng(seed)
    n = n_train + n_train // 4
    x = rng.integers(0, 256, (n, 60, 60, 3), dtype=np.uint8)
    y = rng.integers(0, 2, n).astype(np.uint8)
    split = (np.arange(n) >= n_train).astype(np.uint8)  # train, then val
    meta = {"mean": [127.5] * 3, "std": [73.9] * 3, "content_hash": content_hash(x, y, split)}
    return CropSet(x, y, split, np.full(n, "synthetic"), np.zeros((n, 4), np.float32), meta)


class _Clock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs: list[tuple[float, float]] = []  # (wall, cpu) seconds

    @staticmethod
    def _now():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), r.ru_utime + r.ru_stime

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._now()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(tuple(b - a for a, b in zip(self._start, self._now())))


def epoch_seconds(crops: CropSet, feed: str, epochs: int, batch_size: int = 20) -> dict:
    """Mean (wall, cpu) seconds per epoch after the first, for feed 'numpy' or 'tf.data'."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model, clock = build_model(ModelConfig(variant=1)), _Clock()
    if feed == "numpy":
        (x, y), val = normalized(crops, "train"), normalized(crops, "val")
        model.fit(x, y, batch_size=batch_size, validation_data=val, epochs=epochs,
                  shuffle=True, verbose=0, callbacks=[clock])
    else:
        train_ds, val_ds = datasets(crops, batch_size)
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=[clock])
    wall, cpu = np.mean(clock.epochs[1:], axis=0)
    return {"feed": feed, "wall_s_per_epoch": round(float(wall), 3),
            "cpu_s_per_epoch": round(float(cpu), 3), "load1": round(os.getloadavg()[0], 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crops", type=int, default=1600, help="training crops (val = n/4)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args(argv)
    crops = synthetic(args.crops)
    for _ in range(args.reps):
        for feed in ("numpy", "tf.data"):
            print(json.dumps({"crops": args.crops, **epoch_seconds(crops, feed, args.epochs)}),
                  flush=True)


if __name__ == "__main__":
    main()
