"""Small but real coarse / fine / final studies built with Optuna's own API (no TensorFlow).

Validation accuracy is a smooth bump around lr = 1e-3, reg = 1e-4 so that the best
trials, the fine box and the curves have a known shape; attributes follow docs/design.md.
"""
from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

COARSE = {"lr": [1e-6, 1e-1], "reg": [1e-7, 1e-1]}
FINE = {"lr": [2e-4, 5e-3], "reg": [1e-5, 1e-3]}
EPOCHS = 4
CONFUSION = [[150, 10], [18, 142]]


def accuracy(lr: float, reg: float) -> float:
    d = (math.log10(lr) + 3) ** 2 + 0.5 * (math.log10(reg) + 4) ** 2
    return 0.5 + 0.45 * math.exp(-d / 4)


def history(acc: float, epochs: int = EPOCHS) -> list[dict]:
    rows = []
    for e in range(epochs):
        f = (1 - 0.5 ** (e + 1)) / (1 - 0.5 ** epochs)  # rises fast, then flattens
        rows.append({"epoch": e, "loss": 0.7 - 0.4 * f, "accuracy": 0.5 + (acc - 0.45) * f,
                     "val_loss": 0.72 - 0.35 * f, "val_accuracy": 0.5 + (acc - 0.5) * f,
                     "seconds": 2.75})
    return rows


def _trial(lr: float, reg: float, space: dict, state=TrialState.COMPLETE,
           extra: dict | None = None):
    dists = {k: FloatDistribution(*space[k], log=True) for k in ("lr", "reg")}
    params = {"lr": lr, "reg": reg}
    if state == TrialState.FAIL:
        return create_trial(state=state, params=params, distributions=dists,
                            user_attrs={"fail_reason": "loss became nan in epoch 1",
                                        "epochs": 1})
    h = history(accuracy(lr, reg))
    return create_trial(state=state, value=h[-1]["val_accuracy"], params=params,
                        distributions=dists,
                        intermediate_values={r["epoch"]: r["val_accuracy"] for r in h},
                        user_attrs={"history": h, "epochs": EPOCHS,
                                    "val_loss": h[-1]["val_loss"], "worker": "w0",
                                    **(extra or {})})


def _study(storage, name: str, attrs: dict) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for k, v in {"model": 1, "epochs": EPOCHS, "batch_size": 32, "seed": 0,
                 "data_hash": "sha256:abc", "data_source": "builtin-sample", **attrs}.items():
        study.set_user_attr(k, v)
    return study


def _log_uniform(rng, space: dict, n: int) -> list[tuple[float, float]]:
    return [tuple(10 ** rng.uniform(*np.log10(space[k])) for k in ("lr", "reg"))
            for _ in range(n)]


def build_run(storage, name: str = "demo", stages: tuple = ("coarse", "fine", "final"),
              n_coarse: int = 24, n_fine: int = 12) -> dict:
    """Create NAME-coarse / -fine / -final in `storage`; returns {stage: Study}."""
    rng = np.random.default_rng(0)
    out = {}
    if "coarse" in stages:
        s = out["coarse"] = _study(storage, f"{name}-coarse", {
            "stage": "coarse", "space": COARSE, "n_trials": n_coarse})
        for lr, reg in _log_uniform(rng, COARSE, n_coarse):
            s.add_trial(_trial(lr, reg, COARSE, TrialState.FAIL if lr > 3e-2
                               else TrialState.COMPLETE))
    if "fine" in stages:
        s = out["fine"] = _study(storage, f"{name}-fine", {
            "stage": "fine", "space": FINE, "n_trials": n_fine, "parent": f"{name}-coarse",
            "k": 10, "rule": "min-max of top-k"})
        for lr, reg in _log_uniform(rng, FINE, n_fine):
            s.add_trial(_trial(lr, reg, FINE))
    if "final" in stages:
        s = out["final"] = _study(storage, f"{name}-final", {
            "stage": "final", "n_trials": 1, "parent": f"{name}-fine", "source_trial": 3,
            "epochs": 10})
        s.add_trial(_trial(1.1e-3, 1.2e-4, FINE, extra={
            "test_accuracy": 0.9125, "test_loss": 0.231, "confusion": CONFUSION,
            "source_study": f"{name}-fine", "source_trial": 3}))
    return out
