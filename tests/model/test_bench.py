"""model/bench.py stays runnable: both feeds on a handful of crops."""
from __future__ import annotations

from model.bench import epoch_seconds, synthetic


def test_both_feeds_report_seconds_per_epoch():
    crops = synthetic(16)
    assert crops.part("val")[0].shape == (4, 60, 60, 3)
    for feed in ("numpy", "tf.data"):
        row = epoch_seconds(crops, feed, epochs=2, batch_size=8)
        assert row["feed"] == feed
        assert row["wall_s_per_epoch"] > 0 and row["cpu_s_per_epoch"] > 0
