"""The study's pruner: chosen where the study is created, stored as its `pruner`
attribute, built the same way by every worker of that study (Hyperband's brackets need
the same settings everywhere). Optuna's own pruners; each epoch's validation accuracy
reaches them through study/objective.py's pruning hook."""
from __future__ import annotations

import optuna

from study.errors import SetupError

PRUNERS = ("none", "median", "hyperband")


def build(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """`name` for a study whose trials train `epochs` epochs (Hyperband's max resource)."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs),
                                              reduction_factor=3)
    raise SetupError(f"unknown pruner {name!r}: choose {', '.join(PRUNERS)}")


def of_study(attrs: dict) -> optuna.pruners.BasePruner:
    return build(attrs.get("pruner", "none"), int(attrs.get("epochs", 1)))
