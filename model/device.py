"""Which device trains: GPU memory growth, mixed precision, a one-line description.

Call `configure()` once per process, before building any model. Which GPUs are
visible is decided outside (CUDA_VISIBLE_DEVICES, set by the container or the
launcher); this module never picks one. Everything here is CPU-safe.

The GPU branches (memory growth, the mixed_float16 policy, the GPU name) cannot
run on the development machine, which has no GPU: they are written against the
TensorFlow API and exercised only on a GPU host.
"""
from __future__ import annotations

import logging
import os

import tensorflow as tf
import keras

log = logging.getLogger(__name__)

MIXED_PRECISION_ENV = "FACEHPO_MIXED_PRECISION"
_description: str | None = None


def configure(mixed_precision: bool | None = None) -> str:
    """Set up the visible devices and return their description, e.g. "CPU" or
    "GPU:0 NVIDIA A100-SXM4-40GB (CUDA_VISIBLE_DEVICES=1)".

    mixed_precision: True / False, or None to read FACEHPO_MIXED_PRECISION=1.
    It is honoured only when a GPU is visible; on CPU float16 is slower, so the
    request is ignored with a warning. Safe to call again: later calls only
    re-describe (memory growth cannot change once TensorFlow has started).
    """
    global _description
    if mixed_precision is None:
        mixed_precision = os.environ.get(MIXED_PRECISION_ENV, "").strip().lower() in (
            "1", "true", "yes", "on")
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:  # GPU only: grow allocations instead of grabbing all memory
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as e:  # TensorFlow already initialized the device
            log.debug("memory growth unchanged on %s: %s", gpu.name, e)
    if mixed_precision and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")  # GPU only
    elif mixed_precision:
        log.warning("mixed precision ignored: no GPU visible (float16 is slow on CPU)")
    _description = _describe(gpus)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        _description += " mixed_float16"
    return _description


def describe() -> str:
    """The description from `configure()`, or the visible devices if it was not called."""
    return _description or _describe(tf.config.list_physical_devices("GPU"))


def _describe(gpus: list) -> str:
    if not gpus:
        return "CPU"
    names = []
    for i, gpu in enumerate(gpus):  # GPU only
        details = tf.config.experimental.get_device_details(gpu)
        names.append(f"GPU:{i} {details.get('device_name', 'unknown')}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    suffix = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    return ", ".join(names) + suffix
