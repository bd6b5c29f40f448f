"""model/bench.py stays runnable: both feeds on a handful of crops."""
from __future__ import annotations

import time

from model.bench import epoch_seconds, synthetic


def test_both_feeds_time_the_epochs_after_the_first():
    """The figure is the mean of epochs 2..E: E - 1 of them fit in the call's wall time,
    with the first epoch (tracing) left out, so they take well under all of it."""
    crops = synthetic(16)
    assert crops.part("val")[0].shape == (4, 60, 60, 3)
    for feed in ("numpy", "tf.data"):
        start = time.perf_counter()
        row = epoch_seconds(crops, feed, epochs=3, batch_size=8)
        total = time.perf_counter() - start
        assert row["feed"] == feed
        assert 0 < 2 * row["wall_s_per_epoch"] < total / 2, (row, total)
