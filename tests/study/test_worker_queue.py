"""The worker only ever pops WAITING trials: several worker processes draining one
study with an instant objective (as benchmarks/bench_workers.py does) leave exactly the
enqueued trials, each configuration COMPLETE once; Optuna's fallback to a new trial on
an empty queue (`queue.pop_only` -> NothingWaiting) never escapes nor writes a row."""
import multiprocessing as mp
import threading
import time
import warnings
from collections import Counter

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from dataset.archive import load_crops, read_meta
from study import storage as db
from study.queue import NothingWaiting, Queue, pop_only
from study.objective import Objective
from study.stages import StageConfig, create_coarse
from study.worker import WorkerConfig, run_worker
from tests.study.live import by_state, tiny_crops, trials

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


class Instant(Objective):
    """facehpo's objective minus the training: suggest lr and reg, name the worker, return.
    A worker that runs more than `limit` trials stops with an error, not a runaway loop."""
    limit = 40

    def __call__(self, trial) -> float:
        self.ran = getattr(self, "ran", 0) + 1
        if self.ran > self.limit:
            raise RuntimeError(f"ran {self.ran} trials, more than the {self.limit} enqueued")
        space = self.cfg.space
        lr = trial.suggest_float("lr", *space["lr"], log=True)
        reg = trial.suggest_float("reg", *space["reg"], log=True)
        trial.set_user_attr("worker", self.info.worker)
        return lr * reg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_crops(tmp_path_factory.mktemp("data"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/facehpo.db"
    return request.getfixturevalue("fresh_pg")


def _study(url, tiny, n, name="q", **storage_cfg):
    storage = db.open_storage(db.StorageConfig(url=url, **storage_cfg), create=True)
    study = create_coarse(storage, StageConfig(name=name, trials=n, epochs=1), read_meta(tiny))
    return storage, study


def _worker(url, crops_file, study, wid, barrier, out):
    storage = db.open_storage(db.StorageConfig(url=url))
    cfg = WorkerConfig(study=study, worker_id=wid, poll_seconds=0.2, progress=False)
    crops = load_crops(crops_file)
    barrier.wait()
    out.put(run_worker(storage, crops, cfg, objective_factory=Instant))


def test_four_workers_drain_forty_trials_and_create_none(url, tiny):
    """All four reach the empty queue at about the same time: none may create a trial."""
    n, procs = 40, 4
    storage, study = _study(url, tiny, n)
    storage.engine.dispose()
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(url, str(tiny), study.study_name, f"w{i}", barrier, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join(timeout=120)
        assert [w.exitcode for w in workers] == [0] * procs
        summaries = [out.get(timeout=10) for _ in workers]
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
    ts = trials(url, study.study_name)
    assert len(ts) == n and by_state(ts) == {"COMPLETE": n}
    assert sorted(t.user_attrs["draw"] for t in ts) == list(range(n))
    assert sum(s.completed for s in summaries) == n and not any(s.failed or s.interrupted for s in summaries)
    took = Counter(t.user_attrs["worker"] for t in ts)
    assert len(took) >= 2, took  # the queue was contended, not drained by one process


def _heartbeats(storage) -> int:
    with storage.engine.connect() as conn:
        return conn.execute(sqlalchemy.text("SELECT count(*) FROM trial_heartbeats")).scalar_one()


def test_pop_only_on_an_empty_queue_raises_and_leaves_nothing(url, tiny):
    storage, study = _study(url, tiny, 1)
    study = db.load(storage, study.study_name)
    called, threads = [], threading.active_count()

    def objective(trial):
        called.append(trial.number)
        return 1.0

    with pop_only(storage):
        study.enqueue_trial({"lr": 1e-3, "reg": 1e-3})  # from a template: still allowed
        study.optimize(objective, n_trials=2)  # pops the two enqueued trials
        with pytest.raises(NothingWaiting):
            study.optimize(objective, n_trials=1, callbacks=[lambda s, t: called.append("callback")])
    assert called == [0, 1] and threading.active_count() == threads  # no heartbeat thread left
    ts = trials(url, study.study_name)
    assert len(ts) == 2 and by_state(ts) == {"COMPLETE": 2} and _heartbeats(storage) == 2
    # outside the block Optuna creates a trial as usual
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat with ask()
        assert study.ask().number == 2
    storage.engine.dispose()


def test_worker_polls_an_empty_queue_until_others_finish_and_creates_nothing(url, tiny, capsys):
    """Nothing WAITING, one trial RUNNING elsewhere: the worker polls (NothingWaiting on
    every look) without failing, printing or creating anything, and exits once it ends."""
    storage, study = _study(url, tiny, 2)
    other = optuna.load_study(study_name=study.study_name, storage=url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        held = other.ask()  # the other worker's trial
    finish = threading.Timer(1.5, lambda: other.tell(held, 0.5))
    finish.start()
    try:
        cfg = WorkerConfig(study=study.study_name, poll_seconds=0.2)
        summary = run_worker(storage, load_crops(tiny), cfg, objective_factory=Instant)
    finally:
        finish.join()
    assert (summary.completed, summary.failed, summary.interrupted) == (1, 0, None)
    ts = trials(url, study.study_name)
    assert len(ts) == 2 and by_state(ts) == {"COMPLETE": 2}
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("[q-coarse] trial")]
    assert len(lines) == 1 and lines[0].endswith("(1/2 finished)"), lines
    storage.engine.dispose()


def test_a_stale_trial_is_failed_by_the_worker_with_its_reason_not_by_optuna(url, tiny):
    """Taking a trial runs no stale check of Optuna's (which records no reason); the
    worker's check fails the trial with its fail_reason and re-queues it."""
    storage, study = _study(url, tiny, 1, heartbeat_interval=1, grace_period=2)
    study = db.load(storage, study.study_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dead = study.ask()  # a worker that beat once, then died
    storage.record_heartbeat(Queue(storage, study).trial_id(dead.number))
    time.sleep(3)
    assert Queue(storage, study).pop() is None
    assert by_state(trials(url, study.study_name)) == {"RUNNING": 1}
    summary = run_worker(storage, load_crops(tiny), WorkerConfig(study=study.study_name, progress=False),
                         objective_factory=Instant)
    assert (summary.completed, summary.failed) == (1, 0)
    ts = trials(url, study.study_name)
    assert by_state(ts) == {"FAIL": 1, "COMPLETE": 1}
    assert ts[0].user_attrs["fail_reason"].startswith("no heartbeat within the grace period")
    assert ts[1].system_attrs["failed_trial"] == 0
    storage.engine.dispose()
