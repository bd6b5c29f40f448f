"""One compiled packed model per process, reset between runs instead of rebuilt.

Tracing the training step costs ~1.2 s on the 2-core CPU (about an epoch of Model 1),
and Keras keeps the traced step with the model, so the trainer keeps the model: before
each run every slice's weights are overwritten with the initial ones of its trial's
seed (model/packed.py `initial_slice`), its L2 factor and dropout seed state are set,
and the optimizer's moments, step count and per-slice learning rates are reset. A run
on the kept model gives the same history as on a new one (tests/model/test_compiled.py).

What fixes the traced graph is the key: the backend, pack size K, variant, dropout
rate, convolution layout, steps per execution and the dtype policy. Another key drops
the kept model (a worker that keeps to one K keeps one model).
"""
from __future__ import annotations

import keras

from model.packed import PackedCNN, compile_pack

_kept: tuple[tuple, PackedCNN] | None = None


def key(k: int, variant: int, dropout: float, steps_per_execution: int, conv: str = "auto") -> tuple:
    return (keras.backend.backend(), k, variant, dropout, conv, steps_per_execution,
            keras.mixed_precision.global_policy().name)


def kept_pack(k: int, variant: int, dropout: float, steps_per_execution: int,
              conv: str = "auto") -> PackedCNN:
    """The kept compiled pack for this key, building (and compiling) one if the key changed.
    Its variables are the caller's to reset (model/train.py does)."""
    global _kept
    want = key(k, variant, dropout, steps_per_execution, conv)
    if _kept is None or _kept[0] != want:
        forget()
        pack = PackedCNN(k, variant, dropout, conv=conv)
        compile_pack(pack, steps_per_execution)
        _kept = (want, pack)
    return _kept[1]


def current() -> PackedCNN | None:
    return _kept[1] if _kept is not None else None


def forget() -> None:
    """Drop the kept model (after an out-of-memory error, or for another key)."""
    global _kept
    if _kept is not None:
        _kept = None
        policy = keras.mixed_precision.global_policy()  # clear_session resets it to float32
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(policy)
