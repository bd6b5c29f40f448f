"""One compiled packed model per process, reset between runs instead of rebuilt.

Tracing the training step costs ~1.2 s on the 2-core CPU (about an epoch of Model 1),
and Keras keeps the traced step with the model, so the trainer keeps the model: before
each run every slice's weights are overwritten with the initial ones of its trial's
seed (model/packed.py `initial_slice`), its L2 factor and dropout seed state are set,
and the optimizer's moments, step count and per-slice learning rates are reset. A run
on the kept model gives the same history as on a new one (tests/model/test_compiled.py).

What fixes the traced graph is the key: the backend, pack size K, variant, dropout
rate, convolution layout, steps per execution and the dtype policy. The two most recently
used keys are kept: a stage's last pack often holds fewer than K trials, and the next
stage's full packs then find their model still traced.
"""
from __future__ import annotations

import keras

from model.packed import PackedCNN, compile_pack

KEEP = 2
_kept: dict[tuple, PackedCNN] = {}  # oldest first
_last: PackedCNN | None = None


def key(k: int, variant: int, dropout: float, steps_per_execution: int, conv: str = "auto") -> tuple:
    return (keras.backend.backend(), k, variant, dropout, conv, steps_per_execution,
            keras.mixed_precision.global_policy().name)


def kept_pack(k: int, variant: int, dropout: float, steps_per_execution: int,
              conv: str = "auto") -> PackedCNN:
    """The kept compiled pack for this key, building (and compiling) one if none is kept.
    Its variables are the caller's to reset (model/train.py does)."""
    global _last
    want = key(k, variant, dropout, steps_per_execution, conv)
    pack = _kept.pop(want, None)
    if pack is None:
        while len(_kept) >= KEEP:
            _kept.pop(next(iter(_kept)))
        pack = PackedCNN(k, variant, dropout, conv=conv)
        compile_pack(pack, steps_per_execution)
    _kept[want] = pack  # most recent last
    _last = pack
    return pack


def current() -> PackedCNN | None:
    """The pack the last run used (None after forget)."""
    return _last


def forget() -> None:
    """Drop every kept model (after an out-of-memory error, or to start afresh)."""
    global _last
    if _kept or _last is not None:
        _kept.clear()
        _last = None
        policy = keras.mixed_precision.global_policy()  # clear_session resets it to float32
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(policy)
