"""A worker: load the data once, take WAITING trials until the study's budget is spent, exit.

The loop asks the study's queue (study/queue.py) for a trial, trains it with a heartbeat
running, and tells Optuna the outcome. A worker never creates a trial of its own, so the
study's budget stays exactly what its stage enqueued. With nothing WAITING, the worker
draws the next round of a TPE / GP study once the current one has ended (study/rounds.py);
otherwise it waits while any trial of the study is RUNNING (that trial may yet come back,
re-queued) or a round is still to be drawn, and exits once the whole budget has ended.
SIGTERM (docker stop) and SIGINT stop the worker cleanly at the end of the current epoch: that trial is failed with its reason and re-queued at once
(study/signals.py). A lost database connection is retried with backoff
(`reconnect_attempts`); the trial it cut short is re-queued once the database is back. A
setup failure inside a trial (full disk, unwritable output) re-queues that trial too,
then stops the worker.

With `--pack K` (FACEHPO_PACK) the worker takes up to K WAITING trials, one pop at a
time as above, and trains them together as one packed model (model/packed.py), each
with its own heartbeat, intermediate values and outcome; whatever stops the pack (a
signal at the end of an epoch, a lost database, a killed process) re-queues all of its
trials. `auto` is AUTO_CPU_PACK (1) on a CPU and AUTO_GPU_PACK on a GPU. The final
stage's one trial always runs alone.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from study import dberrors, pruning, rounds
from study import storage as db
from study.errors import SetupError, TrialFailed
from study.objective import ObjectiveConfig, WorkerInfo
from study.options import epoch_progress, option, out_dir, pack
from study.queue import Heartbeat, Queue, Taken
from study.signals import Checked, Interrupted, Signals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    study: str = option(None, flag="--study", kind="str", metavar="STUDY", help="e.g. facehpo-coarse")
    out_dir: Path = out_dir()
    worker_id: str | None = option(None, flag="--worker-id", env="FACEHPO_WORKER_ID", kind="str", metavar="ID",
                                   help="recorded on each trial (default host-pid)")
    poll_seconds: float = 5.0     # wait between looks while other workers finish
    progress: bool = True         # a line per trial (and per epoch with epoch_progress)
    epoch_progress: bool = epoch_progress()
    reconnect_attempts: int = 8     # retries after losing the database mid-run, then SetupError
    reconnect_backoff: float = 1.0  # seconds before the first retry, doubled each time (max 30)
    pack: str = pack()


AUTO_GPU_PACK = 16  # not yet measured on a GPU (BENCHMARKS.md): set FACEHPO_PACK there
# bench_pack on the 2-core Intel Xeon: K = 2 at 1.04-1.11x the one-trial trainer's trials/hour,
# K = 16 0.94-0.99x K = 1 (BENCHMARKS.md section 8). Too small a gain to change what a worker holds by
# default: a pruned slice keeps costing its pack's time, and a stop re-queues the whole pack.
AUTO_CPU_PACK = 1


def pack_size(text: str, device: str, stage: str) -> int:
    """K for `--pack TEXT` on `device` for a study of `stage` (SetupError if TEXT is neither
    a positive integer nor auto)."""
    text = str(text).strip().lower()
    if text == "auto":
        k = AUTO_CPU_PACK if device == "CPU" else AUTO_GPU_PACK
    elif text.isdigit() and int(text) >= 1:
        k = int(text)
    else:
        raise SetupError(f"--pack / FACEHPO_PACK must be a positive integer or auto, got {text!r}")
    return 1 if stage == "final" else k


@dataclass(frozen=True)
class WorkerSummary:
    study: str
    completed: int
    failed: int
    pruned: int
    interrupted: str | None = None


def check_data(study: optuna.Study, crops) -> None:
    """A worker given other data than the study was created with refuses."""
    want = study.user_attrs.get("data_hash")
    if "stage" not in study.user_attrs:
        raise SetupError(f"study {study.study_name!r} was not created by facehpo (no stage attribute)")
    if want != crops.content_hash:
        raise SetupError(f"data mismatch: study {study.study_name!r} was created with data {want}, "
                         f"this worker has {crops.content_hash} ({crops.meta.get('source')}); "
                         "pass the same --data file")


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _warm_up(crops) -> None:
    """Import the trainer and normalize the splits before the first trial starts, so
    its wall time holds training, not the worker's start-up (~1-4 s, bench_overhead)."""
    import optuna_integration.keras  # noqa: F401  (imports TensorFlow)

    from dataset.pipeline import normalized
    from model import train  # noqa: F401

    for split in ("train", "val"):
        normalized(crops, split)


def run_worker(storage, crops, cfg: WorkerConfig, device: str = "CPU",
               objective_factory=None) -> WorkerSummary:
    """Take WAITING trials of `cfg.study` until its budget is spent: every draw made
    (study/rounds.py), none WAITING or RUNNING.

    `objective_factory(crops, ObjectiveConfig, WorkerInfo)` builds the callable each
    trial runs; by default the stage's own (study/final.py: objective_class), which
    trains the CNN. benchmarks/bench_workers.py passes an instant one (an `Objective`
    subclass) to time the worker's loop alone."""
    study = db.load(storage, cfg.study, sampler=optuna.samplers.RandomSampler())
    check_data(study, crops)
    study.pruner = pruning.of_study(study.user_attrs)  # the study's own, the same on every worker
    ocfg = ObjectiveConfig.from_study(study.user_attrs, cfg.out_dir / cfg.study, cfg.epoch_progress)
    k = pack_size(cfg.pack, device, ocfg.stage)  # a bad value fails before TensorFlow loads
    if objective_factory is None:
        from study.final import objective_class

        objective_factory = objective_class(ocfg.stage)
        _warm_up(crops)
    loop = _Loop(storage, study, cfg, objective_factory(crops, ocfg, WorkerInfo.here(cfg.worker_id, device)), k)
    with Signals() as signals, warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return loop.run(signals)


class _Loop:
    """The worker's loop over one study: ask the queue, train, tell, count."""

    def __init__(self, storage, study: optuna.Study, cfg: WorkerConfig, objective, k: int = 1):
        self.storage, self.study, self.cfg, self.objective, self.k = storage, study, cfg, objective, k
        self.queue = Queue(storage, study)
        self.done = {TrialState.COMPLETE: 0, TrialState.FAIL: 0, TrialState.PRUNED: 0}
        self.current: list[int] = []  # the ids of the trials being trained
        self.total = study.user_attrs.get("n_trials", "?")

    def summary(self, interrupted: str | None = None) -> WorkerSummary:
        d = self.done
        return WorkerSummary(self.cfg.study, d[TrialState.COMPLETE], d[TrialState.FAIL],
                             d[TrialState.PRUNED], interrupted=interrupted)

    def run(self, signals: Signals) -> WorkerSummary:
        lost, failures = None, 0  # lost: the trials a lost connection cut short
        try:
            while True:
                try:
                    for trial_id in lost or ():
                        self.queue.requeue(trial_id, "the worker lost the database during the trial; re-queued")
                    lost = None
                    if not self.step(signals):
                        return self.summary()
                    failures = 0
                except Exception as e:
                    trial_ids, self.current = self.current, []
                    if dberrors.is_transient(e):
                        lost = lost or trial_ids
                        failures += 1
                        self._wait_for_database(failures, e, signals)
                        continue
                    retried = [t for t in trial_ids if self.queue.retried(t)]
                    for trial_id in retried:
                        log.warning("trial id %d was failed as stale by another worker while this one "
                                    "trained it; its retry is queued (raise FACEHPO_GRACE_PERIOD)", trial_id)
                    if trial_ids and len(retried) == len(trial_ids):
                        continue
                    for trial_id in set(trial_ids) - set(retried):
                        self.queue.give_back(trial_id, _one_line(e))
                    raise
        except Interrupted as e:
            for trial_id in set(self.current) | set(lost or ()):
                try:
                    self.queue.requeue(trial_id, f"interrupted by {e}; re-queued")
                except Exception as err:  # database away: the stale-trial check re-queues it later
                    log.warning("could not release trial id %d (%s): it is re-queued once its "
                                "heartbeat is older than the grace period", trial_id, dberrors.cause(err))
            return self.summary(interrupted=str(e))

    def step(self, signals: Signals) -> bool:
        """Train up to K WAITING trials, draw the next round, or wait while others train;
        False once the budget is spent."""
        self.current = []
        signals.check()
        self.queue.check_stale()
        taken: list[Taken] = []
        while len(taken) < self.k:  # the same exact-budget pop, once per trial
            one = self.queue.pop()
            if one is None:
                break
            taken.append(one)
            self.current.append(one.trial_id)
        if taken:
            if self.k == 1:
                self.train(taken[0], signals)
            else:
                self.train_pack(taken, signals)
            self.current = []
            for one in taken:
                self.report(one)
            return True
        # Nothing WAITING: trials failed as stale come back as WAITING copies, and RUNNING
        # ones may yet (their worker may be killed); once a round has ended, the next one
        # is drawn. The study is done when every draw is made and none is WAITING or RUNNING.
        if self.queue.check_stale(force=True) or rounds.advance(self.storage, self.study):
            return True
        if self.queue.drained() and rounds.all_drawn(
                rounds.RoundPlan.from_attrs(self.study.user_attrs), self.study.get_trials(deepcopy=False)):
            return False
        signals.sleep(self.cfg.poll_seconds)
        return True

    def train(self, taken: Taken, signals: Signals) -> None:
        """Run the objective on the trial with its heartbeat beating, and tell Optuna the
        outcome: its value, FAIL (NaN, out of memory: the reason is on the trial) or
        PRUNED. Anything else is not the trial's fault and propagates with the trial
        still RUNNING, for the loop to re-queue."""
        with Heartbeat(self.storage, taken.trial_id):
            try:
                value, state = self.objective(Checked(taken.trial, signals)), TrialState.COMPLETE
            except TrialFailed:
                value, state = None, TrialState.FAIL
            except optuna.TrialPruned:
                value, state = None, TrialState.PRUNED
        # a trial failed as stale meanwhile cannot be told: ValueError, and the loop warns
        self.study.tell(taken.trial, value, state=state)

    def train_pack(self, taken: list[Taken], signals: Signals) -> None:
        """The trials trained together (objective.run_pack), each with its heartbeat, each
        told its own outcome. An exception (a signal at the end of an epoch, a lost
        database) leaves them all RUNNING, for the loop to re-queue."""
        states = {"complete": TrialState.COMPLETE, "failed": TrialState.FAIL, "pruned": TrialState.PRUNED}
        with contextlib.ExitStack() as beats:
            for one in taken:
                beats.enter_context(Heartbeat(self.storage, one.trial_id))
            outcomes = self.objective.run_pack([Checked(one.trial, signals) for one in taken],
                                               check=signals.check)
        for one, (value, state) in zip(taken, outcomes):
            try:
                self.study.tell(one.trial, value, state=states[state])
            except ValueError:  # failed as stale meanwhile: tell the others all the same
                if not self.queue.retried(one.trial_id):
                    raise
                log.warning("trial id %d was failed as stale by another worker while this one "
                            "trained it; its retry is queued (raise FACEHPO_GRACE_PERIOD)", one.trial_id)

    def report(self, taken: Taken) -> None:
        """Count the trial just run and print its line: state and value from the database,
        with the study's finished count."""
        state, value, finished = db.outcome(self.storage, taken.trial_id)
        self.done[state] = self.done.get(state, 0) + 1
        if self.cfg.progress:
            trial = taken.trial
            shown = f"val_acc {value:.4f}" if value is not None else state.name
            params, reason = trial.params, trial.user_attrs.get("fail_reason", "")
            print(f"[{self.study.study_name}] trial {trial.number} {shown} lr {params.get('lr', 0):.3e} "
                  f"reg {params.get('reg', 0):.3e} {reason} ({finished}/{self.total} finished)",
                  file=sys.stderr, flush=True)

    def _wait_for_database(self, failures: int, error: Exception, signals: Signals) -> None:
        """Back off after the `failures`-th lost connection in a row; SetupError past the limit."""
        cfg, url = self.cfg, dberrors.mask(self.storage.url)
        if failures > cfg.reconnect_attempts:
            raise SetupError(f"lost the study database {url}: {dberrors.cause(error)} (gave up "
                             f"after {cfg.reconnect_attempts} retries; start the worker again once it is "
                             "back: its interrupted trial is re-queued then)") from None
        delay = dberrors.backoff(cfg.reconnect_backoff, failures)
        log.warning("lost the study database %s (%s); retry %d/%d in %.1fs", url,
                    dberrors.cause(error), failures, cfg.reconnect_attempts, delay)
        signals.sleep(delay)
