"""One compiled model per process, reset between trials instead of rebuilt.

Building and compiling a model costs ~50 ms; tracing its training step in the first
epoch cost ~1.2 s a trial on the 2-core CPU, about as long as a whole epoch. Keras
keeps the traced step with the model, so the trainer keeps the model: before each run
its variables are overwritten with those of a model freshly built from the run's seed
(weights, BatchNormalization statistics, dropout seed states), the optimizer's state
is zeroed, and the learning rate and the L2 factor, both variables here rather than
constants, are set. A run on the kept model gives the same history as on a new model
(tests/model/test_compiled.py compares them).

What fixes the traced graph is the key: variant, dropout rate, steps per execution
and the dtype policy. Another key drops the kept model and starts a new session.
"""
from __future__ import annotations

import gc

import keras

from model.cnn import ModelConfig, architecture, compile_model


class VariableL2(keras.regularizers.Regularizer):
    """L2 whose factor is a variable, so it can change without a new trace. Same sum
    as keras.regularizers.L2; with factor 0 it adds exactly 0 to the loss."""

    def __init__(self, factor: keras.Variable):
        self.factor = factor

    def __call__(self, x):
        return self.factor * keras.ops.sum(keras.ops.square(x))


class _Kept:
    def __init__(self, key: tuple, model: keras.Model, factor: keras.Variable):
        self.key, self.model, self.factor = key, model, factor


_kept: _Kept | None = None


def kept_model(cfg: ModelConfig, steps_per_execution: int) -> keras.Model:
    """A compiled model in the state `build_model(cfg, steps_per_execution)` would give
    now, reusing the kept one if it fits. Call it right after seeding the run
    (`model.train.seed_run`): the initial weights and dropout seeds are drawn then."""
    global _kept
    if not fits(cfg, steps_per_execution):
        forget()
    factor = _kept.factor if _kept is not None else keras.Variable(
        0.0, dtype="float32", trainable=False, name="l2_factor")
    fresh = architecture(cfg, regularizer=VariableL2(factor))
    factor.assign(cfg.reg)
    if _kept is None:  # the fresh model becomes the kept one
        compile_model(fresh, cfg.lr, steps_per_execution)
        _kept = _Kept(_key(cfg, steps_per_execution), fresh, factor)
        return fresh
    model = _kept.model
    for dst, src in zip(model.variables, fresh.variables, strict=True):
        dst.assign(src)
    del fresh, src
    # the copied-from model is cyclic garbage that Python's collector seldom reached:
    # +0.4 MB of RSS a trial without this (~10 ms; benchmarks/bench_memory.py)
    gc.collect()
    optimizer = model.optimizer
    for v in optimizer.variables:  # iteration count, Adam's moments (once built), the lr
        v.assign(keras.ops.zeros(v.shape, v.dtype))
    optimizer.learning_rate.assign(cfg.lr)
    return model


def _key(cfg: ModelConfig, steps_per_execution: int) -> tuple:
    return (cfg.variant, cfg.dropout, steps_per_execution,
            keras.mixed_precision.global_policy().name)


def fits(cfg: ModelConfig, steps_per_execution: int) -> bool:
    """Whether the kept model can run `cfg` (else kept_model starts a new one)."""
    return _kept is not None and _kept.key == _key(cfg, steps_per_execution)


def forget() -> None:
    """Drop the kept model (the caller clears the Keras session)."""
    global _kept
    _kept = None
