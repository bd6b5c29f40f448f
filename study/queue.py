"""The queue of a study's trials: pop one WAITING trial, re-queue a stopped one, fail stale ones.

The one module that relies on Optuna's private API, because Optuna has no public way to
do two things an exact budget needs (tests/study/test_queue.py fails loudly when an
Optuna release changes either):

1. Pop a WAITING trial without ever creating one. `Study.ask()` pops a WAITING trial,
   or, when none is left, creates a new one: with several workers racing for the last
   trial, that would overshoot the budget the stage enqueued. `PopGuard` overrides
   `RDBStorage._create_new_trial` (which `RDBStorage.create_new_trial` and Optuna's
   `_CachedStorage` both call) to raise NothingWaiting inside `pop_only` instead, before
   any row is written. Trials made from a template (enqueue_trial, add_trial, the retry
   callback) are not affected.
2. Know which trials are stale before failing them. `optuna.storages.fail_stale_trials`
   fails them and runs the retry callback at once, so the retry is enqueued before a
   `fail_reason` can be set (a finished trial cannot be changed): every FAIL trial of
   ours carries its reason. `fail_stale` asks `RDBStorage._get_stale_trial_ids` and
   fails each one itself, reason first, then calls the same public retry callback.

Everything else is public API: `Study.ask` / `tell`, `record_heartbeat`,
`get_trial_id_from_study_id_trial_number`, `RetryHeartbeatStaleTrialCallback`.
A worker takes trials through `Queue.pop`; a packing worker can call it K times.
"""
from __future__ import annotations

import contextlib
import threading
import time
import warnings
from dataclasses import dataclass

import optuna
import sqlalchemy
from optuna.trial import TrialState

from study import locks
from study.rounds import lock_key

_retry_history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history


class NothingWaiting(Exception):
    """Inside `pop_only`: Optuna found no WAITING trial to pop and would have created one."""


_popping = threading.local()  # .storage: the storage in pop-only mode in this thread


class PopGuard:
    """Mixed into the RDBStorage subclass that study/storage.py opens (see 1. above)."""

    def _popping(self) -> bool:
        return getattr(_popping, "storage", None) is self

    def _create_new_trial(self, study_id: int, template_trial=None):
        if template_trial is None and self._popping():
            raise NothingWaiting(f"no WAITING trial in study id {study_id}")
        return super()._create_new_trial(study_id, template_trial)


@contextlib.contextmanager
def pop_only(storage):
    """In this block, `Study.ask()` on a study in `storage` only takes WAITING trials."""
    if not isinstance(storage, PopGuard):
        raise TypeError("pop_only needs a storage from study.storage.open_storage")
    outer, _popping.storage = getattr(_popping, "storage", None), storage
    try:
        yield
    finally:
        _popping.storage = outer


@dataclass(frozen=True)
class Taken:
    """A trial this worker popped: Optuna's live Trial and its storage id."""
    trial: optuna.trial.Trial
    trial_id: int


_COUNT = sqlalchemy.text("SELECT count(*) FROM trials WHERE study_id = :study AND state IN :states"
                         ).bindparams(sqlalchemy.bindparam("states", expanding=True))


class Queue:
    """The trials of one study, as workers see them. `storage` is the one the study was
    loaded from (open_storage), passed explicitly."""

    def __init__(self, storage, study: optuna.Study):
        self.storage, self.study = storage, study
        self.study_id = storage.get_study_id_from_name(study.study_name)
        interval = storage.get_heartbeat_interval()
        self._stale_every, self._stale_last = (interval / 2 if interval else 0.0), None

    def pop(self) -> Taken | None:
        """Take one WAITING trial (Optuna's own pop, now RUNNING), or None if none is WAITING."""
        with locks.claim(self.storage, self.study.study_name), pop_only(self.storage), \
                warnings.catch_warnings():
            # ask() warns that heartbeats are meant for optimize(): the worker beats itself
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            try:
                trial = self.study.ask()
            except NothingWaiting:
                return None
        return Taken(trial, self.trial_id(trial.number))

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def count(self, states) -> int:
        """How many trials are in `states` (TrialState members): one COUNT query, where
        Optuna's get_trials fetches every unfinished trial with its params and attributes
        (benchmarks/bench_workers.py)."""
        with self.storage.engine.connect() as conn:
            return conn.execute(_COUNT, {"study": self.study_id,
                                         "states": [s.name for s in states]}).scalar_one()

    def drained(self) -> bool:
        """Neither WAITING nor RUNNING trials left (a RUNNING one may yet come back)."""
        return self.count((TrialState.WAITING, TrialState.RUNNING)) == 0

    def requeue(self, trial_id: int, reason: str, callback=None) -> None:
        """Fail a RUNNING trial whose process stopped and enqueue its retry, with the lineage
        (system attrs failed_trial / retry_history) Optuna's retry callback keeps.
        `callback` defaults to an unlimited RetryHeartbeatStaleTrialCallback. Under the
        study's round lock: the next round (study/rounds.py) is never drawn between the
        FAIL and its retry."""
        with locks.exclusive(self.storage, lock_key(self.study.study_name)):
            self._requeue(trial_id, reason, callback)

    def _requeue(self, trial_id: int, reason: str, callback=None) -> None:
        frozen = self.storage.get_trial(trial_id)  # before fail_reason: the retry must not inherit it
        if frozen.state != TrialState.RUNNING:
            return  # finished, or already failed and re-queued by the stale-trial check
        try:
            self.storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            if not self.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another worker finished it in between
        self._retry(frozen, callback)

    def _retry(self, frozen, callback=None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            (callback or optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None))(self.study, frozen)

    def fail_stale(self) -> int:
        """Fail every trial silent past the grace period, with its fail_reason, and re-queue
        it as the storage's RetryHeartbeatStaleTrialCallback(max_retry) allows (see 2.).
        How many it found."""
        if self.storage.get_heartbeat_interval() is None:
            return 0
        stale = self.storage._get_stale_trial_ids(self.study_id)  # private: see the docstring
        for trial_id in stale:
            self.requeue(trial_id, "no heartbeat within the grace period: its worker was killed, "
                         "hung or lost the database", self.storage.get_heartbeat_stale_trial_callback())
        return len(stale)

    def check_stale(self, force: bool = False) -> int:
        """fail_stale at most once per half heartbeat interval, not before every trial: a
        trial goes stale only after the grace period (several intervals), so a check per
        instant trial found nothing and cost a query (benchmarks/bench_workers.py)."""
        now = time.monotonic()
        if not force and self._stale_last is not None and now - self._stale_last < self._stale_every:
            return 0
        self._stale_last = now
        return self.fail_stale()

    def retried(self, trial_id: int) -> bool:
        """Was this trial failed and re-queued already (by a stale check elsewhere)?"""
        number = self.storage.get_trial(trial_id).number
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return any(number in _retry_history(t) for t in self.study.get_trials(deepcopy=False))

    def give_back(self, trial_id: int | None, reason: str) -> None:
        """A setup failure (full disk, unwritable output) ended this trial: re-queue it so
        the same command resumes once the cause is fixed."""
        if trial_id is None or self.retried(trial_id):
            return
        frozen = self.storage.get_trial(trial_id)
        if frozen.state == TrialState.RUNNING:
            self.requeue(trial_id, f"setup failure: {reason}; re-queued")
        elif frozen.state == TrialState.FAIL:
            self._retry(frozen, optuna.storages.RetryHeartbeatStaleTrialCallback())


class Heartbeat:
    """Beats for one RUNNING trial from a thread, as Study.optimize does for its own
    trials (a trial taken with ask() gets none from Optuna). A lost connection is logged
    by the storage and the next beat tries again (study/storage.py)."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> "Heartbeat":
        interval = self.storage.get_heartbeat_interval()
        if interval:
            self.storage.record_heartbeat(self.trial_id)
            self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
            self._thread.start()
        return self

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.storage.record_heartbeat(self.trial_id)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
