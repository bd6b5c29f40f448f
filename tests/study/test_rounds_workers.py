"""Adaptive studies drained by real worker processes on PostgreSQL: one worker or three
give the same configurations, the budget stays exact, and a worker killed in the middle
of a round has its trial re-queued and the round completes. The objective is instant and
a deterministic function of the parameters (no TensorFlow): what is under test is who
draws what, and when."""
import multiprocessing as mp
import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from dataset.archive import load_crops, read_meta
from study import rounds
from study import storage as db
from study.errors import TrialFailed
from study.objective import Objective
from study.stages import StageConfig, create_coarse
from study.worker import WorkerConfig, run_worker
from tests.study.live import tiny_crops, trials, wait_for
from tests.study.test_rounds import score

pytestmark = [pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 3}


class Score(Objective):
    """Suggest lr and reg, return `score` of them (a failure where it says None)."""
    seconds = 0.05  # long enough for three workers to interleave

    def __call__(self, trial) -> float:
        space = self.cfg.space
        lr = trial.suggest_float("lr", *space["lr"], log=True)
        reg = trial.suggest_float("reg", *space["reg"], log=True)
        trial.set_user_attr("worker", self.info.worker)
        time.sleep(self.seconds)
        value = score({"lr": lr, "reg": reg})
        if value is None:
            raise TrialFailed("loss became nan in epoch 1")
        return value


class Hang(Score):
    seconds = 600  # killed long before


def _worker(url, crops_file, study, wid, objective, out):
    storage = db.open_storage(db.StorageConfig(url=url, **HEARTBEAT))
    cfg = WorkerConfig(study=study, worker_id=wid, poll_seconds=0.2, progress=False)
    summary = run_worker(storage, load_crops(crops_file), cfg, objective_factory=objective)
    out.put((wid, summary))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_crops(tmp_path_factory.mktemp("data"))


def _create(url, tiny, sampler, n=12, size=4):
    """The study `w-coarse` made anew (a deleted one first): same name, same seed."""
    storage = db.open_storage(db.StorageConfig(url=url, **HEARTBEAT), create=True)
    if db.exists(storage, "w-coarse"):
        optuna.delete_study(study_name="w-coarse", storage=storage)
    create_coarse(storage, StageConfig(name="w", trials=n, epochs=1, seed=4, sampler=sampler,
                                       round_size=size), read_meta(tiny))
    storage.engine.dispose()


def _drain(url, tiny, workers: int, objective=Score):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, str(tiny), "w-coarse", f"w{i}", objective, out))
             for i in range(workers)]
    for p in procs:
        p.start()
    got = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return dict(got)


def _configs(url):
    return {d: (t.params["lr"], t.params["reg"])
            for d, t in rounds.latest(trials(url, "w-coarse")).items()}


@pytest.mark.parametrize("sampler, n", [("tpe", 12), ("gp", 8)])  # GP: one modelled round (time)
def test_one_worker_or_three_same_configurations_exact_budget(fresh_pg, tiny, sampler, n):
    got = []
    for workers in (1, 3):
        _create(fresh_pg, tiny, sampler, n=n)
        summaries = _drain(fresh_pg, tiny, workers)
        ts = trials(fresh_pg, "w-coarse")
        assert len(ts) == n and all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in ts)
        assert sorted(t.user_attrs["draw"] for t in ts) == list(range(n))
        assert [t.user_attrs["round"] for t in sorted(ts, key=lambda t: t.user_attrs["draw"])] == \
            [d // 4 for d in range(n)]
        assert sum(s.completed + s.failed for s in summaries.values()) == n
        assert not any(s.interrupted for s in summaries.values())
        got.append(_configs(fresh_pg))
    assert got[0] == got[1]


def test_killed_worker_mid_round_is_requeued_and_the_round_completes(fresh_pg, tiny):
    _create(fresh_pg, tiny, "tpe", n=8, size=4)
    _drain(fresh_pg, tiny, 1)
    undisturbed = _configs(fresh_pg)

    _create(fresh_pg, tiny, "tpe", n=8, size=4)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    victim = ctx.Process(target=_worker, args=(fresh_pg, str(tiny), "w-coarse", "victim", Hang, out))
    victim.start()
    hung = wait_for(lambda: next((t for t in trials(fresh_pg, "w-coarse")
                                  if t.state == TrialState.RUNNING), None), 120, "the victim's trial")
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    summaries = _drain(fresh_pg, tiny, 2)
    ts = trials(fresh_pg, "w-coarse")
    (stale,) = [t for t in ts if t.number == hung.number]
    assert stale.state == TrialState.FAIL and "no heartbeat" in stale.user_attrs["fail_reason"]
    (retry,) = [t for t in ts if t.system_attrs.get("failed_trial") == hung.number]
    assert retry.user_attrs["draw"] == stale.user_attrs["draw"] and retry.user_attrs["round"] == 0
    assert retry.state in (TrialState.COMPLETE, TrialState.FAIL)
    assert len(ts) == 9 and len(rounds.latest(ts)) == 8  # the budget, plus the one retry
    assert all(t.state != TrialState.WAITING and t.state != TrialState.RUNNING for t in ts)
    assert not any(s.interrupted for s in summaries.values())
    assert _configs(fresh_pg) == undisturbed
