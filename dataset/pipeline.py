"""CropSet -> normalized float32 tf.data.Dataset of (x, y) batches.

Normalization uses the sidecar's train-split mean and std (0..255 scale), so train,
val and test see the same transform. Each split is normalized once into a float32
array and kept for the life of the process (keyed by the crop file's content hash),
so the many trials one worker runs on the same crops share it.

Batches are cut by shuffling indices and gathering whole batches (one gather per
batch instead of one slice per crop). Without a GPU the gathers run inline, in the
thread that runs the training step: no prefetch thread, no autotuning. On the 2-core
CPU a background feed thread competed with TensorFlow's two compute threads, and
epochs of Model 1 came out bimodal, 1.2 s or 2.5 s, the slow kind in most runs
(benchmarks/bench_train.py; BENCHMARKS.md). With a GPU the feed overlaps the
device's work (prefetch, autotuned). TensorFlow is imported lazily.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from dataset.archive import SPLITS, CropSet, content_hash

_CACHE_SIZE = 3  # splits kept: one crop file's train, val and test
_cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_tensors: OrderedDict[int, tuple] = OrderedDict()  # id(array) -> (array, tf.Tensor)
_lock = threading.Lock()


def normalized(crops: CropSet, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one split: x (n, 60, 60, 3) float32 normalized, y (n,) int32.

    Cached and read-only: every trial in the process gets the same arrays."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    digest = crops.meta.get("content_hash") or content_hash(crops.x, crops.y, crops.split)
    key = (digest, tuple(crops.meta["mean"]), tuple(crops.meta["std"]), split)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    x, y = crops.part(split)
    x = (x.astype(np.float32) - crops.mean) / crops.std
    pair = (x, y.astype(np.int32))
    for a in pair:
        a.flags.writeable = False  # shared by every trial in this process
    with _lock:
        _cache[key] = pair
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return pair


def clear_cache() -> None:
    with _lock:
        _cache.clear()
        _tensors.clear()


def _constant(a: np.ndarray):
    """tf.constant(a), made once per array: the cached splits are fed to every trial,
    and copying the 69 MB train split into a new tensor each time cost ~0.1 s a trial."""
    import tensorflow as tf

    with _lock:
        hit = _tensors.get(id(a))
        if hit is not None and hit[0] is a:  # holding `a` keeps its id from being reused
            _tensors.move_to_end(id(a))
            return hit[1]
    t = tf.constant(a)
    with _lock:
        _tensors[id(a)] = (a, t)
        while len(_tensors) > 2 * _CACHE_SIZE:  # x and y of each cached split
            _tensors.popitem(last=False)
    return t


def datasets(crops: CropSet, batch_size: int = 20, seed: int = 0):
    """(train_ds, val_ds): train reshuffled every epoch from `seed`, val in file order."""
    train = _batched(*normalized(crops, "train"), batch_size, shuffle_seed=seed)
    val = _batched(*normalized(crops, "val"), batch_size)
    return train, val


def ordered_batches(crops: CropSet, split: str, order, batch_size: int = 20):
    """Batches of one split in `order` (an index array: the trainer's epoch order), fed
    inline on CPU like every other dataset here. Keras's own NumPy adapter under TensorFlow
    runs a prefetching tf.data pipeline, whose feed thread fought the two compute threads."""
    x, y = normalized(crops, split)
    return _batched(x, y, batch_size, order=np.asarray(order, np.int64))


def split_dataset(crops: CropSet, split: str = "test", batch_size: int = 20, *,
                  normalize: bool = True):
    """One split in file order. With normalize=False x is float32 raw 0..255 pixels
    (for a saved inference model that normalizes itself)."""
    if normalize:
        x, y = normalized(crops, split)
    else:
        x, y = crops.part(split)
        x, y = x.astype(np.float32), y.astype(np.int32)
    return _batched(x, y, batch_size)


def _batched(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None,
             order: np.ndarray | None = None):
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    n = len(x)
    if n == 0:
        raise ValueError("empty split: no crops to feed")
    xt, yt = _constant(x), _constant(y)   # (n, 60, 60, 3) float32, (n,) int32
    idx = tf.data.Dataset.range(n) if order is None else tf.data.Dataset.from_tensor_slices(order)
    if shuffle_seed is not None:
        idx = idx.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = idx.batch(batch_size).map(lambda i: (tf.gather(xt, i), tf.gather(yt, i)))
    if tf.config.list_physical_devices("GPU"):  # GPU only: overlap the feed with the device
        return ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_inline())


def _inline():
    """tf.data options that keep the whole feed in the consumer's thread: tf.data
    otherwise injects a prefetch and runs autotuning threads even without .prefetch()."""
    import tensorflow as tf

    opts = tf.data.Options()
    opts.autotune.enabled = False
    opts.threading.private_threadpool_size = 1
    opts.experimental_optimization.inject_prefetch = False
    return opts
