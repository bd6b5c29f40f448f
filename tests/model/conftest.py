"""A tiny crop file for training tests: 40 train / 12 val / 12 test synthetic crops.

A "face" is a bright square on a dark noisy background, so one epoch already moves
the metrics; the file goes through dataset.archive.save_crops like a real one.
"""
from __future__ import annotations

import numpy as np
import pytest

from dataset.archive import save_crops

N_TRAIN, N_VAL, N_TEST = 40, 12, 12


def synthetic_crops(path, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_VAL + N_TEST
    y = np.tile([0, 1], n // 2)
    x = rng.integers(0, 100, (n, 60, 60, 3)).astype(np.uint8)
    x[y == 1, 18:42, 18:42] += 150  # the "face"
    split = np.repeat([0, 1, 2], [N_TRAIN, N_VAL, N_TEST])
    return save_crops(path, x, y, split, [f"synthetic/{i}" for i in range(n)],
                      np.zeros((n, 4)), {"source": "synthetic", "seed": seed})


@pytest.fixture(scope="session")
def tiny_crops(tmp_path_factory):
    return synthetic_crops(tmp_path_factory.mktemp("crops") / "tiny.npz")
