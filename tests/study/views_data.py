"""Real coarse / fine / final studies for the SQL view tests, built with Optuna's ask/tell API.

The run is named like an SQL injection, so every view and every documented query is
exercised with a hostile study name. The data holds what the views must get right:
FAIL trials with reasons (one with a quote), a RUNNING and a WAITING trial, a NaN
val_loss and a NaN in a history list (not valid JSON), an infinite value, a NaN
intermediate value, a three-way tie in the fine study, non-ASCII attribute text, a
second run and a study that facehpo did not create (both must not leak into the first).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import optuna
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

RUN = "x'; DROP TABLE trials; --"
OTHER = "plain"
COARSE = {"lr": [1e-5, 1e-1], "reg": [1e-6, 1e-2]}
FINE = {"lr": [1e-4, 1e-2], "reg": [1e-5, 1e-3]}
REASONS = ("loss became nan in epoch 2", "out of memory: 'OOM' when allocating (60, 60, 3)")
EPOCHS = 3
CONFUSION = [[150, 10], [18, 142]]


def names(run: str) -> dict[str, str]:
    return {stage: f"{run}-{stage}" for stage in ("coarse", "fine", "final")}


def _accuracy(lr: float, reg: float) -> float:
    d = (math.log10(lr) + 3) ** 2 + 0.5 * (math.log10(reg) + 4) ** 2
    return 0.5 + 0.45 * math.exp(-d / 4)


def _study(storage, name: str, attrs: dict) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for k, v in {"model": 1, "epochs": EPOCHS, "batch_size": 32, "seed": 0, **attrs}.items():
        study.set_user_attr(k, v)
    return study


def _train(study: optuna.Study, space: dict, i: int, acc: float | None = None,
           val_loss: float | None = None, fail: str | None = None, attrs: dict | None = None):
    """Take the next WAITING trial, report a learning curve, tell the result."""
    trial = study.ask({k: FloatDistribution(*space[k], log=True) for k in ("lr", "reg")})
    acc = _accuracy(trial.params["lr"], trial.params["reg"]) if acc is None else acc
    for k, v in {"worker": f"w{i % 2}-é", "host": f"host-{i % 2}",
                 "device": "GPU:0" if i % 2 else "CPU:0", **(attrs or {})}.items():
        trial.set_user_attr(k, v)
    epochs = 2 if fail else EPOCHS
    curve = [acc - 0.1 * (epochs - 1 - e) for e in range(epochs)]
    if fail:
        curve[-1] = math.nan
    for e, v in enumerate(curve):
        trial.report(v, e)
    trial.set_user_attr("epochs", epochs)
    trial.set_user_attr("history", [{"epoch": e, "val_accuracy": v} for e, v in enumerate(curve)])
    if fail:
        trial.set_user_attr("fail_reason", fail)
        study.tell(trial, state=TrialState.FAIL)
        return
    trial.set_user_attr("val_loss", 1.0 - acc if val_loss is None else val_loss)
    study.tell(trial, acc)


def _enqueue(study: optuna.Study, space: dict, n: int, seed: int, round_size: int | None = None) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        study.enqueue_trial({k: float(10 ** rng.uniform(*np.log10(space[k])))
                             for k in ("lr", "reg")},
                            user_attrs={"draw": i, "round": i // (round_size or n)})


def build_run(storage, run: str = RUN) -> None:
    n = names(run)
    coarse = _study(storage, n["coarse"], {"stage": "coarse", "space": COARSE, "n_trials": 17})
    _enqueue(coarse, COARSE, 17, seed=1)
    special = {3: {"fail": REASONS[0]}, 7: {"fail": REASONS[0]}, 9: {"fail": REASONS[1]},
               5: {"val_loss": math.nan}, 10: {"acc": math.inf}}
    for i in range(15):
        _train(coarse, COARSE, i, **special.get(i, {}))
    coarse.ask()  # trial 15 stays RUNNING, trial 16 WAITING

    fine = _study(storage, n["fine"], {"stage": "fine", "space": FINE, "n_trials": 8,
                                       "parent": n["coarse"], "k": 5, "rule": "top5-logspan",
                                       "sampler": "tpe", "round_size": 3, "seed": 2**40 + 7,
                                       "sampler_seed": 2**33 + 5})
    _enqueue(fine, FINE, 8, seed=2, round_size=3)  # rounds 0, 0, 0, 1, 1, 1, 2, 2
    ties = {2: {"acc": 0.97, "val_loss": 0.20}, 4: {"acc": 0.97, "val_loss": 0.15},
            6: {"acc": 0.97, "val_loss": 0.15}, 5: {"fail": REASONS[1]}}
    for i in range(8):
        _train(fine, FINE, i, **ties.get(i, {}))

    best = fine.trials[4]
    final = _study(storage, n["final"], {"stage": "final", "space": FINE, "n_trials": 1,
                                         "parent": n["fine"], "source_trial": 4, "epochs": 5})
    final.enqueue_trial(dict(best.params))
    _train(final, FINE, 0, acc=0.955, val_loss=0.12, attrs={
        "test_accuracy": 0.9125, "test_loss": 0.231, "confusion": CONFUSION,
        "source_study": n["fine"], "source_trial": 4})


def build_other(storage) -> None:
    """A second run with better accuracies, and a study without facehpo attributes."""
    coarse = _study(storage, names(OTHER)["coarse"], {"stage": "coarse", "space": COARSE})
    _enqueue(coarse, COARSE, 4, seed=3)
    for i in range(4):
        _train(coarse, COARSE, i, acc=0.99 - i / 100, fail=REASONS[0] if i == 3 else None)
    foreign = optuna.create_study(storage=storage, study_name="not-facehpo")
    foreign.enqueue_trial({"lr": 0.01, "reg": 0.001})
    _train(foreign, COARSE, 0, acc=0.999)


# Reading back: the views through SQL, the same studies through Optuna's Python API.

def rows(engine, sql: str, **params) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sqlalchemy.text(sql), params)]


def load(engine, name: str) -> optuna.Study:
    return _load(engine.url.render_as_string(hide_password=False), name)


@functools.cache  # the studies are written once per session, then only read
def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def studies(engine) -> dict[str, optuna.Study]:
    """{stage: Study} of the run RUN."""
    return {stage: load(engine, name) for stage, name in names(RUN).items()}


def finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def ranked(trials):
    """The documented ranking (docs/sql.md, facehpo_top), computed from FrozenTrials."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and finite(t.value) is not None]
    return sorted(done, key=lambda t: (-t.value, finite(t.user_attrs.get("val_loss")) or math.inf,
                                       t.number))
