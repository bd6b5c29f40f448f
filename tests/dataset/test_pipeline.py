"""dataset/pipeline.py: normalization with the sidecar's train statistics, seeded shuffling."""
from __future__ import annotations

import numpy as np
import pytest

from dataset import pipeline
from dataset.archive import save_crops


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    rng = np.random.default_rng(1)
    n = 30
    x = rng.integers(0, 256, (n, 60, 60, 3)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    split = np.repeat([0, 1, 2], [18, 7, 5])
    return save_crops(tmp_path_factory.mktemp("pipe") / "c.npz", x, y, split,
                      [str(i) for i in range(n)], np.zeros((n, 4)), {"source": "test"})


def collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_normalized_with_train_statistics(crops):
    x, y = pipeline.normalized(crops, "val")
    raw, labels = crops.part("val")
    assert x.dtype == np.float32 and x.shape == (7, 60, 60, 3)
    np.testing.assert_allclose(x, (raw - np.array(crops.meta["mean"])) / np.array(crops.meta["std"]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, labels)
    train_x, _ = pipeline.normalized(crops, "train")
    np.testing.assert_allclose(train_x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(train_x.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_normalized_arrays_are_cached(crops):
    assert pipeline.normalized(crops, "train")[0] is pipeline.normalized(crops, "train")[0]
    pipeline.clear_cache()
    assert pipeline.normalized(crops, "train")[0] is not None


def test_train_is_a_seeded_reshuffle_of_every_crop_each_epoch(crops):
    train, val = pipeline.datasets(crops, batch_size=4, seed=7)
    epoch1, labels1 = collect(train)
    epoch2, _ = collect(train)
    ref, ref_y = pipeline.normalized(crops, "train")
    assert [len(b[1]) for b in train] == [4, 4, 4, 4, 2]
    order = [int(np.flatnonzero((ref == row).all(axis=(1, 2, 3)))[0]) for row in epoch1]
    assert sorted(order) == list(range(18)) and order != list(range(18))
    np.testing.assert_array_equal(labels1, ref_y[order])
    assert not np.array_equal(epoch1, epoch2)  # reshuffled between epochs
    again, _ = collect(pipeline.datasets(crops, batch_size=4, seed=7)[0])
    other, _ = collect(pipeline.datasets(crops, batch_size=4, seed=8)[0])
    np.testing.assert_array_equal(again, epoch1)
    assert not np.array_equal(other, epoch1)
    np.testing.assert_array_equal(collect(val)[0], pipeline.normalized(crops, "val")[0])


def test_split_dataset_raw_and_normalized(crops):
    x, y = collect(pipeline.split_dataset(crops, "test", batch_size=2))
    np.testing.assert_array_equal(x, pipeline.normalized(crops, "test")[0])
    raw, _ = collect(pipeline.split_dataset(crops, "test", batch_size=2, normalize=False))
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(raw, crops.part("test")[0])


def test_bad_arguments(crops):
    with pytest.raises(ValueError, match="split must be one of"):
        pipeline.normalized(crops, "holdout")
    with pytest.raises(ValueError, match="batch size"):
        pipeline.datasets(crops, batch_size=0)


def test_cached_arrays_are_read_only(crops):
    x, _ = pipeline.normalized(crops, "train")
    with pytest.raises(ValueError):
        x[0, 0, 0, 0] = 1.0


def _ops(ds) -> set[str]:
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(tf.raw_ops.DatasetToGraphV2(input_dataset=ds._variant_tensor).numpy())
    return {node.op for node in graph.node}


def test_without_gpu_the_feed_runs_inline(crops):
    """No prefetch thread or autotuning on CPU: a background feed thread competing with
    the compute threads made epochs bimodal (dataset/pipeline.py)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: the feed prefetches there")
    for ds in (*pipeline.datasets(crops, 4), pipeline.split_dataset(crops, "test", 4)):
        assert not {op for op in _ops(ds) if "Prefetch" in op}
        opts = ds.options()
        assert opts.autotune.enabled is False
        assert opts.threading.private_threadpool_size == 1
        assert opts.experimental_optimization.inject_prefetch is False
