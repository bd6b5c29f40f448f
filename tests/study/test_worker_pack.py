"""`facehpo worker --pack K` on the real PostgreSQL: K trials trained as one model, every
guarantee of a one-trial worker kept per trial (exact budget, per-trial results and
attributes, a NaN trial failing alone, SIGTERM and SIGKILL re-queueing the whole pack)."""
import signal
import time

import pytest
from optuna.trial import TrialState

from dataset.archive import read_meta
from study.errors import SetupError
from study.worker import AUTO_CPU_PACK, AUTO_GPU_PACK, pack_size
from tests.study.cli_runner import error_lines, facehpo, start
from tests.study.live import by_state, tiny_crops, trials, wait_for

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_crops(tmp_path_factory.mktemp("data"))


def _init(url, tiny, cwd, name, n, epochs):
    r = facehpo("init", "--name", name, "--trials", n, "--epochs", epochs, "--seed", 3,
                "--storage", url, "--data", tiny, cwd=cwd)
    assert r.returncode == 0, r.stderr


def test_packed_workers_share_the_budget_and_match_one_trial_at_a_time(fresh_pg, tiny, tmp_path):
    _init(fresh_pg, tiny, tmp_path, "p", 7, 2)
    _init(fresh_pg, tiny, tmp_path, "q", 7, 2)  # the same draws and seeds, trained alone
    procs = [start("worker", "--study", "p-coarse", "--storage", fresh_pg, "--data", tiny,
                   "--worker-id", "wp0", "--pack", 3, cwd=tmp_path),
             start("worker", "--study", "p-coarse", "--storage", fresh_pg, "--data", tiny,
                   "--worker-id", "wp1", cwd=tmp_path, FACEHPO_PACK=2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    alone = facehpo("worker", "--study", "q-coarse", "--storage", fresh_pg, "--data", tiny, "--pack", 1,
                    cwd=tmp_path, timeout=900)
    assert alone.returncode == 0, alone.stderr
    packed, single = trials(fresh_pg, "p-coarse"), trials(fresh_pg, "q-coarse")
    assert len(packed) == 7 and {t.state for t in packed} == {TrialState.COMPLETE}
    assert sorted(t.user_attrs["draw"] for t in packed) == list(range(7))
    sizes = {"wp0": 3, "wp1": 2}
    for t in packed:
        w = t.user_attrs["worker"]
        assert w in sizes and 1 <= t.user_attrs["pack_size"] <= sizes[w]
        assert 0 <= t.user_attrs["pack_slot"] < t.user_attrs["pack_size"]
        assert t.user_attrs["host"] and t.user_attrs["device"].startswith("CPU")
        assert sorted(t.intermediate_values) == [0, 1] and t.intermediate_values[1] == pytest.approx(t.value)
        assert len(t.user_attrs["history"]) == 2 and "val_loss" in t.user_attrs
    assert any(t.user_attrs["pack_size"] > 1 for t in packed)
    assert {t.user_attrs["pack_size"] for t in single} == {1}
    by_draw = {t.user_attrs["draw"]: t for t in single}
    for t in packed:  # a trial's history is the same alone or in a pack (to float noise)
        other = by_draw[t.user_attrs["draw"]]
        assert t.params == other.params
        assert t.value == pytest.approx(other.value, abs=1e-6)
        assert [m["loss"] for m in t.user_attrs["history"]] == pytest.approx(
            [m["loss"] for m in other.user_attrs["history"]], rel=1e-4)


def test_a_diverging_trial_fails_alone_in_its_pack(fresh_pg, tiny, tmp_path):
    from study import storage as db
    from study.stages import StageConfig, create_coarse

    storage = db.open_storage(db.StorageConfig(url=fresh_pg), create=True)
    study = create_coarse(storage, StageConfig(name="n", trials=2, epochs=2), read_meta(tiny))
    study.enqueue_trial({"lr": 1e-3, "reg": 1e30}, user_attrs={"draw": 2, "seed": 1})  # outside the space: diverges
    storage.engine.dispose()
    w = facehpo("worker", "--study", "n-coarse", "--storage", fresh_pg, "--data", tiny, "--pack", 3,
                cwd=tmp_path)
    assert w.returncode == 0, w.stderr
    ts = trials(fresh_pg, "n-coarse")
    assert len(ts) == 3 and {t.user_attrs["pack_size"] for t in ts} == {3}
    bad = next(t for t in ts if t.user_attrs["draw"] == 2)
    assert bad.state == TrialState.FAIL and "became" in bad.user_attrs["fail_reason"]
    assert all(t.state == TrialState.COMPLETE for t in ts if t is not bad)


def test_bad_pack_value_is_one_line(fresh_pg, tiny, tmp_path):
    _init(fresh_pg, tiny, tmp_path, "b", 1, 1)
    r = facehpo("worker", "--study", "b-coarse", "--storage", fresh_pg, "--data", tiny, "--pack", "zero",
                cwd=tmp_path)
    assert r.returncode != 0
    assert error_lines(r.stderr)[-1] == ("facehpo: error: --pack / FACEHPO_PACK must be a positive "
                                         "integer or auto, got 'zero'"), r.stderr
    assert "Traceback" not in r.stderr


def _running(url, study, n):
    ts = trials(url, study)
    return ts if sum(t.state == TrialState.RUNNING for t in ts) == n and all(
        t.intermediate_values for t in ts if t.state == TrialState.RUNNING) else None


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_packed_worker_requeues_all_its_trials(fresh_pg, tiny, tmp_path, signum):
    _init(fresh_pg, tiny, tmp_path, "s", 3, 40)
    w = start("worker", "--study", "s-coarse", "--storage", fresh_pg, "--data", tiny, "--pack", 3,
              "--worker-id", "w-pack", cwd=tmp_path, FACEHPO_HEARTBEAT_INTERVAL=1, FACEHPO_GRACE_PERIOD=4)
    wait_for(lambda: _running(fresh_pg, "s-coarse", 3), 300, "the pack's first epoch")
    w.send_signal(signum)
    _, err = w.communicate(timeout=120)
    if signum == signal.SIGTERM:
        assert w.returncode == 143, err
    else:  # nobody released them: the next worker's stale-trial check does
        time.sleep(5)
        r = facehpo("worker", "--study", "s-coarse", "--storage", fresh_pg, "--data", tiny, "--pack", 3,
                    cwd=tmp_path, FACEHPO_HEARTBEAT_INTERVAL=1, FACEHPO_GRACE_PERIOD=4,
                    timeout=900)
        assert r.returncode == 0, r.stderr
    ts = trials(fresh_pg, "s-coarse")
    first = [t for t in ts if t.state == TrialState.FAIL]
    assert len(first) == 3 and {t.user_attrs["worker"] for t in first} == {"w-pack"}
    assert {t.user_attrs["pack_size"] for t in first} == {3}
    reason = "interrupted by SIGTERM; re-queued" if signum == signal.SIGTERM else "no heartbeat"
    assert all(t.user_attrs["fail_reason"].startswith(reason) for t in first)
    copies = [t for t in ts if t.system_attrs.get("failed_trial") in {f.number for f in first}]
    assert len(copies) == 3 and {c.user_attrs["draw"] for c in copies} == {0, 1, 2}
    if signum == signal.SIGTERM:
        assert by_state(ts) == {"FAIL": 3, "WAITING": 3}
    else:
        assert by_state(ts) == {"FAIL": 3, "COMPLETE": 3}


def test_pipeline_packs_the_search_stages_and_runs_the_final_alone(tmp_path):
    import optuna

    run = facehpo("pipeline", "--profile", "smoke", "--pack", 2, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr
    db = f"sqlite:///{tmp_path / 'facehpo.db'}"
    for stage, n, sizes in (("coarse", 4, {2}), ("fine", 3, {1, 2}), ("final", 1, {1})):
        ts = optuna.load_study(study_name=f"facehpo-{stage}", storage=db).get_trials()
        assert len(ts) == n and {t.state for t in ts} == {TrialState.COMPLETE}, stage
        assert {t.user_attrs["pack_size"] for t in ts} <= sizes and ts[0].user_attrs["pack_size"] == max(sizes)
    assert (tmp_path / "runs" / "facehpo-final" / "model" / "model.keras").is_file()


@pytest.mark.parametrize("text, device, stage, k", [
    ("auto", "CPU", "coarse", AUTO_CPU_PACK),
    ("auto", "GPU 0: NVIDIA H200", "fine", AUTO_GPU_PACK),
    ("auto", "GPU 0: NVIDIA H200", "final", 1),  # the final stage's one trial runs alone
    (" 4 ", "CPU", "coarse", 4),                 # a number is taken as given
    ("8", "CPU", "final", 1),
])
def test_pack_size_resolves_auto_by_device_and_stage(text, device, stage, k):
    assert pack_size(text, device, stage) == k


@pytest.mark.parametrize("text", ["0", "-2", "two", "2.5", ""])
def test_pack_size_refuses_what_is_neither_a_count_nor_auto(text):
    with pytest.raises(SetupError, match="positive integer or auto"):
        pack_size(text, "CPU", "coarse")
