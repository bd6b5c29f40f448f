"""A worker: load the data once, take WAITING trials until none is left, exit.

Claiming is serialized by `storage.exclusive` from "is a trial WAITING?" until Optuna
has popped it, so a worker never creates a trial of its own: the study's budget stays
exactly what the coordinator enqueued. SIGTERM (docker stop) and SIGINT stop the
worker cleanly: the current trial is failed with its reason and re-queued at once.
"""
from __future__ import annotations

import logging
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from study import storage as db
from study.errors import SetupError, TrialFailed
from study.objective import Objective, ObjectiveConfig, WorkerInfo

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SETUP, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 130, 143


class Interrupted(BaseException):
    """Raised in the main thread by SIGTERM / SIGINT. BaseException so no `except
    Exception` on the way swallows it; Optuna marks the running trial FAIL."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class WorkerConfig:
    study: str
    out_dir: Path = Path("runs")
    worker_id: str | None = None
    poll_seconds: float = 5.0     # wait between looks while other workers finish
    pruner: str = "none"          # none | median
    progress: bool = True         # a line per trial (and per epoch with epoch_progress)
    epoch_progress: bool = False


@dataclass(frozen=True)
class WorkerSummary:
    study: str
    completed: int
    failed: int
    pruned: int
    interrupted: str | None = None


def _pruner(name: str):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SetupError(f"unknown pruner {name!r}: choose none or median")


def check_data(study: optuna.Study, crops) -> None:
    """A worker given other data than the study was created with refuses."""
    want = study.user_attrs.get("data_hash")
    if "stage" not in study.user_attrs:
        raise SetupError(f"study {study.study_name!r} was not created by facehpo (no stage attribute)")
    if want != crops.content_hash:
        raise SetupError(f"data mismatch: study {study.study_name!r} was created with data {want}, "
                         f"this worker has {crops.content_hash} ({crops.meta.get('source')}); "
                         "pass the same --data file")


def _count(study, *states) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _requeue(study: optuna.Study, trial_id: int, reason: str) -> None:
    """Fail an interrupted trial and enqueue its retry (the lineage Optuna's retry callback keeps)."""
    storage = study._storage
    frozen = storage.get_trial(trial_id)
    if frozen.state == TrialState.RUNNING:
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        frozen = storage.get_trial(trial_id)
    if frozen.state == TrialState.FAIL:
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, frozen)
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)


class _Signals:
    """Turn SIGTERM / SIGINT into `Interrupted` in the main thread, for the worker's life."""

    def __enter__(self):
        self.old = {s: signal.signal(s, self._raise) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _raise(self, signum, frame):
        for s in self.old:  # a second signal during cleanup must not interrupt the cleanup
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    def __exit__(self, *exc):
        for s, handler in self.old.items():
            signal.signal(s, handler)


def run_worker(storage, crops, cfg: WorkerConfig, device: str = "CPU") -> WorkerSummary:
    """Take WAITING trials of `cfg.study` until none is WAITING or RUNNING."""
    study = db.load(storage, cfg.study, sampler=optuna.samplers.RandomSampler(),
                    pruner=_pruner(cfg.pruner))
    check_data(study, crops)
    info = WorkerInfo.here(cfg.worker_id, device)
    done = {TrialState.COMPLETE: 0, TrialState.FAIL: 0, TrialState.PRUNED: 0}
    objective = Objective(crops, ObjectiveConfig.from_study(study.user_attrs, cfg.out_dir / cfg.study,
                                                            cfg.epoch_progress), info)
    total = study.user_attrs.get("n_trials", "?")

    def report(study, frozen):
        done[frozen.state] = done.get(frozen.state, 0) + 1
        if cfg.progress:
            finished = _count(study, TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
            value = f"val_acc {frozen.value:.4f}" if frozen.value is not None else frozen.state.name
            reason = frozen.user_attrs.get("fail_reason", "")
            print(f"[{study.study_name}] trial {frozen.number} {value} lr {frozen.params.get('lr', 0):.3e} "
                  f"reg {frozen.params.get('reg', 0):.3e} {reason} ({finished}/{total} finished)",
                  file=sys.stderr, flush=True)

    with _Signals(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            while True:
                optuna.storages.fail_stale_trials(study)
                with db.claim(storage, cfg.study) as claim:
                    if _count(study, TrialState.WAITING) == 0:
                        claim.release()
                        if _count(study, TrialState.RUNNING) == 0:
                            break
                        time.sleep(cfg.poll_seconds)  # others still train; their trials may come back
                        continue
                    objective.on_start = claim.release
                    objective.current_trial_id = None
                    study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[report],
                                   gc_after_trial=False, show_progress_bar=False)
        except Interrupted as e:
            if objective.current_trial_id is not None:
                _requeue(study, objective.current_trial_id, f"interrupted by {e}; re-queued")
            return WorkerSummary(cfg.study, done[TrialState.COMPLETE], done[TrialState.FAIL],
                                 done[TrialState.PRUNED], interrupted=str(e))
    return WorkerSummary(cfg.study, done[TrialState.COMPLETE], done[TrialState.FAIL],
                         done[TrialState.PRUNED])
