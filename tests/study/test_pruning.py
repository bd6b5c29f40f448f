"""--pruner none|median|hyperband: stored on the study where it is created and used by
every worker of it; Optuna's own pruners, reached through the objective's per-epoch
hook. Two worker processes on PostgreSQL share one study."""
from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter

import optuna
import pytest

from dataset.archive import load_crops, read_meta
from study import pruning
from study import storage as db
from study.errors import SetupError
from study.objective import Objective
from study.space import NarrowRule
from study.stages import StageConfig, create_coarse, create_fine
from study.worker import WorkerConfig, run_worker
from tests.study.live import by_state, tiny_crops, trials

EPOCHS, N, BAD = 4, 10, (8, 9)  # the last two draws learn nothing


class Scripted(Objective):
    """The real objective with `fit` replaced by scripted curves: val accuracy 0.5 + 0.04 *
    draw each epoch (every trial better than those before it, so none is below the
    median), or 0.1 for the BAD draws. Each epoch goes through the objective's pruning
    hook to the study's pruner, as model.train's epochs do."""
    bad_lrs: frozenset = frozenset()
    lrs: dict = {}

    def fit(self, crops, model_cfg, train_cfg, on_epoch):
        from model.train import EpochMetrics, TrainResult

        draw = self.lrs[model_cfg.lr]
        acc = 0.1 if draw in BAD else 0.5 + 0.04 * draw
        history = []
        for epoch in range(1, train_cfg.epochs + 1):
            time.sleep(0.1)  # both workers in the study at once
            history.append(EpochMetrics(epoch, 1 - acc, acc, 1 - acc, acc, 0.1))
            if on_epoch is not None and on_epoch(epoch, [history[-1]]):
                return TrainResult(tuple(history), None, 0.1, "CPU", pruned=True), None
        return TrainResult(tuple(history), None, 0.1, "CPU"), None


def _worker(url, crops_file, study, wid, lrs, barrier, out):
    Scripted.lrs = lrs
    storage = db.open_storage(db.StorageConfig(url=url))
    barrier.wait()
    out.put(run_worker(storage, load_crops(crops_file), WorkerConfig(
        study=study, worker_id=wid, poll_seconds=0.2, progress=False), objective_factory=Scripted))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_crops(tmp_path_factory.mktemp("data"))


def _two_workers(url, tiny, study) -> list[optuna.trial.FrozenTrial]:
    ts = trials(url, study)
    lrs = {t.system_attrs["fixed_params"]["lr"]: t.user_attrs["draw"] for t in ts}  # enqueued
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, str(tiny), study, f"w{i}", lrs, barrier, out))
             for i in range(2)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    return trials(url, study)


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["median", "hyperband"])
def test_the_study_pruner_prunes_for_both_workers(fresh_pg, tiny, name):
    storage = db.open_storage(db.StorageConfig(url=fresh_pg), create=True)
    study = create_coarse(storage, StageConfig(name=name, trials=N, epochs=EPOCHS, pruner=name),
                          read_meta(tiny))
    assert study.user_attrs["pruner"] == name
    storage.engine.dispose()
    ts = _two_workers(fresh_pg, tiny, study.study_name)
    assert len(ts) == N and set(by_state(ts)) <= {"COMPLETE", "PRUNED"}
    assert len(Counter(t.user_attrs["worker"] for t in ts)) == 2  # both workers took trials
    state = {t.user_attrs["draw"]: t.state.name for t in ts}
    assert [state[d] for d in BAD] == ["PRUNED", "PRUNED"], state
    if name == "median":  # never below the median of the finished ones: none else pruned
        assert sorted(d for d, s in state.items() if s == "PRUNED") == list(BAD)
        # pruned at the first step past the warm-up, not trained on
        assert [len(t.intermediate_values) for t in ts if t.user_attrs["draw"] in BAD] == [2, 2]
    else:
        assert by_state(ts)["COMPLETE"] >= 1


@pytest.mark.postgres
def test_no_pruner_trains_every_epoch_and_narrow_inherits_or_overrides(fresh_pg, tiny):
    storage = db.open_storage(db.StorageConfig(url=fresh_pg), create=True)
    study = create_coarse(storage, StageConfig(name="nop", trials=N, epochs=EPOCHS), read_meta(tiny))
    assert study.user_attrs["pruner"] == "none"
    storage.engine.dispose()
    ts = _two_workers(fresh_pg, tiny, study.study_name)
    assert by_state(ts) == {"COMPLETE": N}
    storage = db.open_storage(db.StorageConfig(url=fresh_pg))
    fine = create_fine(storage, StageConfig(name="nop", trials=2, epochs=2, pruner="median"), NarrowRule(k=3))
    assert fine.user_attrs["pruner"] == "median"
    storage.engine.dispose()


def test_pruners_are_optunas_own_built_from_the_study_attributes():
    assert isinstance(pruning.of_study({"pruner": "median", "epochs": 5}), optuna.pruners.MedianPruner)
    hb = pruning.of_study({"pruner": "hyperband", "epochs": 20})
    assert isinstance(hb, optuna.pruners.HyperbandPruner) and hb._max_resource == 20
    assert isinstance(pruning.of_study({"epochs": 5}), optuna.pruners.NopPruner)  # older studies
    with pytest.raises(SetupError, match="choose none, median, hyperband"):
        pruning.build("asha", 5)
