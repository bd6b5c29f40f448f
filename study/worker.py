"""A worker: load the data once, take WAITING trials until none is left, exit.

Each trial is Optuna's own pop (`study.optimize(n_trials=1)`) inside `storage.pop_only`,
so a worker never creates a trial of its own: when the queue is empty, Optuna's
fallback to a new trial raises NothingWaiting instead, and the study's budget stays
exactly what the coordinator enqueued. SIGTERM (docker stop) and SIGINT stop the
worker cleanly: the current trial is failed with its reason and re-queued at once.
A lost database connection is retried with backoff (`reconnect_attempts`); the trial
it cut short is re-queued once the database is back. A setup failure inside a trial
(full disk, unwritable output) re-queues that trial too, then stops the worker.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from study import storage as db
from study.errors import SetupError, TrialFailed
from study.objective import Objective, ObjectiveConfig, WorkerInfo

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SETUP, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 130, 143


class Interrupted(BaseException):
    """Raised in the main thread after SIGTERM / SIGINT, at a safe point (see _Signals).
    BaseException so no `except Exception` on the way swallows it."""

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
    reconnect_attempts: int = 8     # retries after losing the database mid-run, then SetupError
    reconnect_backoff: float = 1.0  # seconds before the first retry, doubled each time (max 30)


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


def _requeue(study: optuna.Study, trial_id: int, reason: str, callback=None) -> None:
    """Fail a trial whose process stopped and enqueue its retry, with the lineage
    (system attrs failed_trial / retry_history) Optuna's retry callback keeps.
    `callback` defaults to an unlimited RetryHeartbeatStaleTrialCallback."""
    storage = study._storage
    frozen = storage.get_trial(trial_id)  # snapshot before fail_reason: the retry must not inherit it
    if frozen.state != TrialState.RUNNING:
        return  # finished, or already failed and re-queued by the stale-trial check
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # another worker finished it in between
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        (callback or optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None))(study, frozen)


def _fail_stale(study: optuna.Study) -> int:
    """Optuna's fail_stale_trials, plus the fail_reason every FAIL trial carries; the
    re-queue obeys the storage's RetryHeartbeatStaleTrialCallback(max_retry). How many
    trials it found stale."""
    storage = study._storage
    if storage.get_heartbeat_interval() is None:
        return 0
    stale = storage._get_stale_trial_ids(study._study_id)
    for trial_id in stale:
        _requeue(study, trial_id, "no heartbeat within the grace period: its worker was killed, "
                 "hung or lost the database", storage.get_heartbeat_stale_trial_callback())
    return len(stale)


class _StaleCheck:
    """_fail_stale at most once per half heartbeat interval, not before every trial: a
    trial goes stale only after the grace period (several intervals), so a check per
    instant trial found nothing and cost a query (benchmarks/bench_workers.py)."""

    def __init__(self, study: optuna.Study):
        self.study, self.last = study, None
        interval = study._storage.get_heartbeat_interval()
        self.every = interval / 2 if interval else 0.0

    def __call__(self, force: bool = False) -> int:
        now = time.monotonic()
        if not force and self.last is not None and now - self.last < self.every:
            return 0
        self.last = now
        return _fail_stale(self.study)


def _retried(study: optuna.Study, trial_id: int) -> bool:
    number = study._storage.get_trial(trial_id).number
    return any(number in t.system_attrs.get("retry_history", ()) for t in study.get_trials(deepcopy=False))


def _give_back(study: optuna.Study, trial_id: int | None, error: Exception) -> None:
    """A setup failure (full disk, unwritable output) ended this trial: re-queue it so
    the same command resumes once the cause is fixed."""
    if trial_id is None or _retried(study, trial_id):
        return
    frozen = study._storage.get_trial(trial_id)
    if frozen.state == TrialState.RUNNING:
        _requeue(study, trial_id, f"setup failure: {_one_line(error)}; re-queued")
    elif frozen.state == TrialState.FAIL:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class _Checked:
    """The trial as the objective sees it: every report (once per epoch) and attribute
    write first raises a pending Interrupted, from plain Python code inside Keras' fit."""

    def __init__(self, trial, signals: "_Signals"):
        self._trial, self._signals = trial, signals

    def __getattr__(self, name):
        return getattr(self._trial, name)

    def report(self, value, step):
        self._signals.check()
        self._trial.report(value, step)

    def set_user_attr(self, key, value):
        self._signals.check()
        self._trial.set_user_attr(key, value)


class _Escape(BaseException):
    """Carries an error that is not the trial's fault (lost database, full disk) past
    Optuna, which would otherwise fail the trial and log a traceback: the worker then
    releases the still-RUNNING trial itself, with the reason."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _guarded(objective: Objective, signals: "_Signals", started: Callable[[object], None]):
    """The objective; trial failures (NaN, pruned) go to Optuna, anything else escapes.
    `started(trial)` is told each trial Optuna popped."""
    def run(trial):
        started(trial)
        try:
            return objective(_Checked(trial, signals))
        except (TrialFailed, optuna.TrialPruned):
            raise
        except Exception as e:
            raise _Escape(e) from e
    return run


class _Signals:
    """SIGTERM / SIGINT, for the worker's life. The handler only takes note: an
    exception raised from a handler lands wherever the main thread is, and inside
    TensorFlow's C++ code or a half-done database transaction it gets lost, mangled
    or leaves a lock behind. `check()` raises Interrupted at safe points instead:
    between trials, in the waits, and at the end of each epoch. A second signal
    stops the process at once (its trial is then re-queued by the heartbeat check)."""

    def __init__(self):
        self.pending: int | None = None
        self.wake = threading.Event()

    def __enter__(self):
        self.old = {s: signal.signal(s, self._note) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _note(self, signum, frame):
        if self.pending is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.pending = signum
        self.wake.set()

    def check(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending)

    def sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.check()

    def __exit__(self, *exc):
        for s, handler in self.old.items():
            signal.signal(s, handler)


def _warm_up(crops) -> None:
    """Import the trainer and normalize the splits before the first trial starts, so
    its wall time holds training, not the worker's start-up (~1-4 s, bench_overhead)."""
    import optuna_integration.keras  # noqa: F401  (imports TensorFlow)

    from dataset.pipeline import normalized
    from model import train  # noqa: F401

    for split in ("train", "val"):
        normalized(crops, split)


class _NoTraceback(logging.Filter):
    """A failed trial (NaN loss, OOM) is expected: Optuna's warning keeps its one line,
    without the traceback it would attach; our own line already gives the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_trial_failures() -> None:
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _NoTraceback) for f in handler.filters):
            handler.addFilter(_NoTraceback())


def run_worker(storage, crops, cfg: WorkerConfig, device: str = "CPU",
               objective_factory=Objective) -> WorkerSummary:
    """Take WAITING trials of `cfg.study` until none is WAITING or RUNNING.

    `objective_factory(crops, ObjectiveConfig, WorkerInfo)` builds the callable each
    trial runs; the default trains the CNN. benchmarks/bench_workers.py passes an
    instant one (an `Objective` subclass) to time the worker's loop alone."""
    study = db.load(storage, cfg.study, sampler=optuna.samplers.RandomSampler(),
                    pruner=_pruner(cfg.pruner))
    check_data(study, crops)
    info = WorkerInfo.here(cfg.worker_id, device)
    done = {TrialState.COMPLETE: 0, TrialState.FAIL: 0, TrialState.PRUNED: 0}
    ocfg = ObjectiveConfig.from_study(study.user_attrs, cfg.out_dir / cfg.study, cfg.epoch_progress)
    objective = objective_factory(crops, ocfg, info)
    if objective_factory is Objective:
        _warm_up(crops)
    total = study.user_attrs.get("n_trials", "?")

    def report(trial):
        """Count the trial just run and print its line. `trial` is Optuna's Trial, whose
        number, params and user attrs are known here; state and value come from the
        database (Optuna decides them in tell), with the study's finished count."""
        state, value, finished = db.outcome(storage, trial._trial_id)
        done[state] = done.get(state, 0) + 1
        if cfg.progress:
            shown = f"val_acc {value:.4f}" if value is not None else state.name
            params, reason = trial.params, trial.user_attrs.get("fail_reason", "")
            print(f"[{study.study_name}] trial {trial.number} {shown} lr {params.get('lr', 0):.3e} "
                  f"reg {params.get('reg', 0):.3e} {reason} ({finished}/{total} finished)",
                  file=sys.stderr, flush=True)

    with _Signals() as signals, warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _quiet_trial_failures()
        lost, failures = None, 0  # lost: the trial a lost connection cut short
        stale = _StaleCheck(study)
        try:
            while True:
                try:
                    if lost is not None:
                        _requeue(study, lost, "the worker lost the database during the trial; re-queued")
                        lost = None
                    if not _take_one(study, storage, cfg, objective, report, signals, stale):
                        break
                    failures = 0
                except (Exception, _Escape) as caught:
                    e = caught.error if isinstance(caught, _Escape) else caught
                    trial_id, objective.current_trial_id = objective.current_trial_id, None
                    if db.is_transient(e):
                        lost = lost if lost is not None else trial_id
                        failures += 1
                        _wait_for_database(storage, cfg, failures, e, signals)
                    elif trial_id is not None and _retried(study, trial_id):
                        log.warning("trial id %d was failed as stale by another worker while this one "
                                    "trained it; its retry is queued (raise FACEHPO_GRACE_PERIOD)", trial_id)
                    else:
                        _give_back(study, trial_id, e)
                        raise e from None
        except Interrupted as e:
            for trial_id in {objective.current_trial_id, lost} - {None}:
                try:
                    _requeue(study, trial_id, f"interrupted by {e}; re-queued")
                except Exception as err:  # database away: the stale-trial check re-queues it later
                    log.warning("could not release trial id %d (%s): it is re-queued once its "
                                "heartbeat is older than the grace period", trial_id, db.cause(err))
            return WorkerSummary(cfg.study, done[TrialState.COMPLETE], done[TrialState.FAIL],
                                 done[TrialState.PRUNED], interrupted=str(e))
    return WorkerSummary(cfg.study, done[TrialState.COMPLETE], done[TrialState.FAIL],
                         done[TrialState.PRUNED])


def _take_one(study, storage, cfg: WorkerConfig, objective: Objective, report, signals,
              stale: _StaleCheck) -> bool:
    """Train one WAITING trial, or wait while others train; False once none is left."""
    objective.current_trial_id = None
    signals.check()
    stale()
    taken = []  # the Trial Optuna popped, if it popped one
    with db.claim(storage, cfg.study) as claim, db.pop_only(storage):
        objective.on_start = claim.release
        try:
            study.optimize(_guarded(objective, signals, taken.append), n_trials=1, catch=(TrialFailed,),
                           gc_after_trial=False, show_progress_bar=False)
        except db.NothingWaiting:
            pass
    objective.current_trial_id = None
    if taken:
        report(taken[0])
        return True
    # Nothing WAITING: trials failed as stale come back as WAITING copies, and RUNNING
    # ones may yet (their worker may be killed); the study is drained when neither is left.
    if stale(force=True):
        return True
    if db.count_trials(storage, study._study_id, (TrialState.WAITING, TrialState.RUNNING)) == 0:
        return False
    signals.sleep(cfg.poll_seconds)
    return True


def _wait_for_database(storage, cfg: WorkerConfig, failures: int, error: Exception, signals) -> None:
    """Back off after the `failures`-th lost connection in a row; SetupError past the limit."""
    if failures > cfg.reconnect_attempts:
        raise SetupError(f"lost the study database {db.mask(storage.url)}: {db.cause(error)} (gave up "
                         f"after {cfg.reconnect_attempts} retries; start the worker again once it is "
                         "back: its interrupted trial is re-queued then)") from None
    delay = min(cfg.reconnect_backoff * 2 ** (failures - 1), 30.0)
    log.warning("lost the study database %s (%s); retry %d/%d in %.1fs", db.mask(storage.url),
                db.cause(error), failures, cfg.reconnect_attempts, delay)
    signals.sleep(delay)
