"""Workers as users run them: `facehpo init`, then several `facehpo worker` processes
on the real PostgreSQL, training the real CNN on a tiny crop file."""
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from dataset.archive import save_crops
from dataset.sample import build_sample
from tests.study.cli_runner import error_lines, facehpo, start

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 40 / 20 / 20 crop file cut from the built-in sample: a trial takes ~1 s."""
    d = tmp_path_factory.mktemp("data")
    s = build_sample(d / "sample.npz")
    keep = np.concatenate([np.flatnonzero((s.split == i) & (s.y == c))[:n]
                           for i, n in ((0, 20), (1, 10), (2, 10)) for c in (0, 1)])
    save_crops(d / "tiny.npz", s.x[keep], s.y[keep], s.split[keep], s.source[keep], s.box[keep],
               {"source": "builtin-sample", "note": "tiny cut of the built-in sample, for tests"})
    return d / "tiny.npz"


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_two_workers_share_the_budget_exactly(fresh_pg, tiny, tmp_path):
    init = facehpo("init", "--name", "w", "--trials", 6, "--epochs", 2, "--seed", 3,
                   "--storage", fresh_pg, "--data", tiny, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    procs = [start("worker", "--study", "w-coarse", "--storage", fresh_pg, "--data", tiny,
                   "--worker-id", f"w{i}", cwd=tmp_path) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _trials(fresh_pg, "w-coarse")
    assert len(trials) == 6 and {t.state for t in trials} == {TrialState.COMPLETE}
    # every draw trained exactly once, by one of the two workers, with its curve
    assert sorted(t.user_attrs["draw"] for t in trials) == list(range(6))
    assert {t.user_attrs["worker"] for t in trials} <= {"w0", "w1"}
    for t in trials:
        assert sorted(t.intermediate_values) == [0, 1]
        assert t.intermediate_values[1] == pytest.approx(t.value)
        assert t.user_attrs["epochs"] == 2 and t.user_attrs["device"].startswith("CPU")
        assert len(t.user_attrs["history"]) == 2 and "val_loss" in t.user_attrs
    # the same seed gives the same configurations as the coordinator drew
    from study.space import COARSE
    from study.stages import draw

    by_draw = {t.user_attrs["draw"]: t.params for t in trials}
    assert [by_draw[i] for i in range(6)] == draw(COARSE, 6, seed=3)  # floats stored exactly
    # a worker started on a finished study exits at once, creating nothing
    late = facehpo("worker", "--study", "w-coarse", "--storage", fresh_pg, "--data", tiny, cwd=tmp_path)
    assert late.returncode == 0 and len(_trials(fresh_pg, "w-coarse")) == 6


def test_worker_refuses_other_data_and_unknown_study(fresh_pg, tiny, tmp_path):
    assert facehpo("init", "--name", "d", "--trials", 1, "--epochs", 1, "--storage", fresh_pg,
                   "--data", tiny, cwd=tmp_path).returncode == 0
    other = facehpo("worker", "--study", "d-coarse", "--storage", fresh_pg, cwd=tmp_path)  # the full sample
    assert other.returncode == 1
    assert error_lines(other.stderr)[-1].startswith("facehpo: error: data mismatch")
    assert "Traceback" not in other.stderr
    missing = facehpo("worker", "--study", "nope", "--storage", fresh_pg, "--data", tiny, cwd=tmp_path)
    assert missing.returncode == 1 and "no study named 'nope'" in missing.stderr
    assert {t.state for t in _trials(fresh_pg, "d-coarse")} == {TrialState.WAITING}


def test_nan_trial_fails_with_reason_and_worker_goes_on(fresh_pg, tiny, tmp_path):
    """A configuration that must diverge (lr = 1e6: the loss is NaN or infinite within its
    first epoch) is FAIL with its reason; the worker goes on, the next trial completes."""
    from study import storage as db
    from study.stages import StageConfig, create_coarse

    storage = db.open_storage(db.StorageConfig(url=fresh_pg), create=True)
    meta = __import__("dataset.archive", fromlist=["read_meta"]).read_meta(tiny)
    study = create_coarse(storage, StageConfig(name="n", trials=1, epochs=2), meta)
    study.enqueue_trial({"lr": 1e6, "reg": 1e-3}, user_attrs={"draw": 1, "seed": 1},
                        skip_if_exists=False)
    storage.engine.dispose()
    w = facehpo("worker", "--study", "n-coarse", "--storage", fresh_pg, "--data", tiny, cwd=tmp_path)
    assert w.returncode == 0, w.stderr
    by_draw = {t.user_attrs["draw"]: t for t in _trials(fresh_pg, "n-coarse")}
    assert sorted(by_draw) == [0, 1]
    diverged = by_draw[1]
    assert diverged.state == TrialState.FAIL, diverged.state
    assert diverged.params["lr"] == 1e6
    reason = diverged.user_attrs["fail_reason"]
    assert " became nan in epoch 1" in reason or " became infinite in epoch 1" in reason, reason
    assert by_draw[0].state == TrialState.COMPLETE
    line = [l for l in w.stderr.splitlines() if l.startswith("[n-coarse] trial 1 ")]
    assert line and "FAIL" in line[0] and reason in line[0], w.stderr
    assert "this worker completed 1, failed 1, pruned 0" in w.stderr and "Traceback" not in w.stderr
