"""Damage done for real to real workers: SIGKILL in the middle of a trial, the database
stopped and started under them, a storage that is not there, two pipelines at once.
What must hold afterwards: every enqueued configuration COMPLETE exactly once, nothing
RUNNING or WAITING, every cut-short trial FAIL with a visible retry lineage."""
import random
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import _missing
from tests.study.cli_runner import error_lines, facehpo, start
from tests.study.live import by_state, running_of, throwaway_pg, tiny_crops, trials, wait_for

retry_history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history
retried_from = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
FAST_HEARTBEAT = {"FACEHPO_HEARTBEAT_INTERVAL": 1, "FACEHPO_GRACE_PERIOD": 5}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_crops(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def server():
    s = throwaway_pg(_missing)
    yield s
    s.close()


def _init(url, name, n, epochs, tiny, cwd):
    r = facehpo("init", "--name", name, "--trials", n, "--epochs", epochs, "--storage", url,
                "--data", tiny, cwd=cwd)
    assert r.returncode == 0, r.stderr


def _worker(url, study, wid, tiny, cwd, **env):
    return start("worker", "--study", study, "--storage", url, "--data", tiny, "--worker-id", wid,
                 cwd=cwd, **{**FAST_HEARTBEAT, **env})


def _finish(procs, timeout=300):
    """Wait for every worker; their (returncode, stderr)."""
    end = time.monotonic() + timeout
    errs = [p.communicate(timeout=max(1, end - time.monotonic()))[1] for p in procs]
    return [(p.returncode, err) for p, err in zip(procs, errs)]


def _check_nothing_lost(url, study, n):
    """Each of the n configurations COMPLETE exactly once; every FAIL re-queued once."""
    ts = trials(url, study)
    states = by_state(ts)
    assert states.get("COMPLETE") == n and set(states) <= {"COMPLETE", "FAIL"}, states
    assert sorted(t.user_attrs["draw"] for t in ts if t.state == TrialState.COMPLETE) == list(range(n))
    failed = [t for t in ts if t.state == TrialState.FAIL]
    for f in failed:
        copies = [t for t in ts if retry_history(t)[-1:] == [f.number]]
        assert len(copies) == 1, f"trial {f.number} re-queued {len(copies)} times"
        assert copies[0].params == f.params and copies[0].user_attrs["draw"] == f.user_attrs["draw"]
        assert retried_from(copies[0]) == (retry_history(f) or [f.number])[0]
    assert len(ts) == n + len(failed)
    return ts, failed


def _retriable(trial):
    """`trial` if losing it once more still re-queues it (max_retry=2 counts every loss)."""
    return trial if trial is not None and len(retry_history(trial)) < 2 else None


@pytest.mark.postgres
@pytest.mark.slow
def test_sigkilled_worker_five_times_loses_and_duplicates_nothing(fresh_pg, tiny, tmp_path):
    """Five workers in turn are killed inside model.fit; then three workers finish the
    study while the last killed trials go stale under them. The helpers start only after
    the kills: a trial takes ~0.05 s an epoch here, and running from the start they
    drained the queue before later victims had started."""
    n, study = 20, "kill-coarse"
    _init(fresh_pg, "kill", n, 30, tiny, tmp_path)  # 30 epochs: ~1.7 s a trial
    killed, rng = [], random.Random(0)
    for life in range(5):
        victim = _worker(fresh_pg, study, f"victim-{life}", tiny, tmp_path)
        trial = wait_for(lambda: _past_first_epoch(_retriable(running_of(fresh_pg, study, f"victim-{life}"))),
                         120, f"victim-{life} to train")
        time.sleep(rng.uniform(0.0, 0.4))  # inside model.fit, well before its last epoch
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        killed.append(trial.number)
    helpers = [_worker(fresh_pg, study, f"w{i}", tiny, tmp_path) for i in (1, 2)]
    last = _worker(fresh_pg, study, "victim-5", tiny, tmp_path)
    for code, err in _finish(helpers + [last]):
        assert code == 0 and "Traceback" not in err, err
        assert "failed as stale by another worker" not in err  # no live trial mistaken for dead
    ts, failed = _check_nothing_lost(fresh_pg, study, n)
    assert sorted(f.number for f in failed) == sorted(killed)
    for f in failed:
        assert f.user_attrs["fail_reason"].startswith("no heartbeat within the grace period")
        assert f.user_attrs["worker"].startswith("victim-") and f.datetime_complete is not None


def _past_first_epoch(trial):
    """`trial` once it has reported its first epoch, else None."""
    return trial if trial is not None and len(trial.intermediate_values) >= 1 else None


@pytest.mark.slow
def test_database_restart_mid_study_workers_reconnect_and_finish(server, tiny, tmp_path):
    """The server stops (every session cut) for ~6 s while both workers train; they back
    off, reconnect, re-queue the trials the outage cut short, and finish the study."""
    url, study, n = server.create_db("ride"), "ride-coarse", 6
    _init(url, "ride", n, 12, tiny, tmp_path)
    env = {"FACEHPO_RECONNECT_ATTEMPTS": 6, "FACEHPO_CONNECT_BACKOFF": 0.5}  # up to ~30 s
    procs = [_worker(url, study, f"w{i}", tiny, tmp_path, **env) for i in (1, 2)]
    wait_for(lambda: all(_past_first_epoch(running_of(url, study, f"w{i}")) for i in (1, 2)), 120,
             "both workers to train")  # so each meets the outage at its next epoch's report
    server.stop("fast")
    time.sleep(6)
    server.start()
    results = _finish(procs)
    for code, err in results:
        assert code == 0 and "Traceback" not in err, err
    assert any("lost the study database" in err for _, err in results), "\n".join(e for _, e in results)
    ts, failed = _check_nothing_lost(url, study, n)
    assert failed, "the outage cut no trial short: the test did not test anything"
    for f in failed:
        assert f.user_attrs["fail_reason"] in (
            "the worker lost the database during the trial; re-queued",
            "no heartbeat within the grace period: its worker was killed, hung or lost the database")


@pytest.mark.slow
def test_database_outage_past_the_retries_exits_1_and_a_restart_finishes(server, tiny, tmp_path):
    url, study, n = server.create_db("quit"), "quit-coarse", 3
    _init(url, "quit", n, 8, tiny, tmp_path)
    w = _worker(url, study, "w1", tiny, tmp_path, FACEHPO_RECONNECT_ATTEMPTS=2,
                FACEHPO_CONNECT_BACKOFF=0.5)
    wait_for(lambda: running_of(url, study, "w1"), 120, "the worker to train")
    server.stop("fast")
    try:
        code, err = _finish([w], timeout=120)[0]
    finally:
        server.start()
    assert code == 1 and "Traceback" not in err
    assert error_lines(err)[-1].startswith(f"facehpo: error: lost the study database {url}: ")
    assert "gave up after 2 retries" in error_lines(err)[-1]
    # its trial is still RUNNING; the next worker re-queues it once the heartbeat is stale
    again = facehpo("worker", "--study", study, "--storage", url, "--data", tiny, cwd=tmp_path,
                    **FAST_HEARTBEAT)
    assert again.returncode == 0, again.stderr
    ts, failed = _check_nothing_lost(url, study, n)
    assert len(failed) == 1


@pytest.mark.parametrize("url, cause", [
    ("postgresql+psycopg2://facehpo:s3cret@127.0.0.1:{port}/facehpo",
     "Connection refused (after 3 attempts; is the server running and are host and port right?)"),
    ("postgresql+psycopg2://facehpo:s3cret@no-such-host.invalid:5432/facehpo",
     "could not translate host name"),
])
def test_unreachable_storage_at_start_is_one_masked_line_after_bounded_retries(url, cause, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = url.format(port=s.getsockname()[1])
    t0 = time.monotonic()
    r = facehpo("report", "--storage", url, cwd=tmp_path, FACEHPO_CONNECT_ATTEMPTS=3,
                FACEHPO_CONNECT_BACKOFF=0.2)
    elapsed = time.monotonic() - t0
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("facehpo: error: cannot open the study database "
                                "postgresql+psycopg2://facehpo:***@")
    assert cause in lines[-1] and "s3cret" not in r.stderr
    retries = [l for l in lines[:-1] if "not reachable" in l]
    assert len(retries) == (2 if "refused" in cause else 0)  # a wrong host name is not retried
    assert len(lines) == len(retries) + 1 and elapsed < 20


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.slow
def test_two_pipelines_on_the_same_names_one_refuses_the_other_finishes(backend, request, tiny, tmp_path):
    """Both started at once on the same study names (SQLite: the default ./facehpo.db)."""
    args = ["pipeline", "--profile", "smoke", "--name", "twin", "--data", tiny]
    if backend == "postgres":
        args += ["--storage", request.getfixturevalue("fresh_pg")]
    url = args[-1] if backend == "postgres" else f"sqlite:///{tmp_path}/facehpo.db"
    procs = [start(*args, cwd=tmp_path) for _ in range(2)]
    results = sorted(_finish(procs, timeout=600))
    (ok, ok_err), (refused, refused_err) = results
    assert ok == 0 and "Traceback" not in ok_err, ok_err
    assert refused == 1 and "Traceback" not in refused_err
    assert error_lines(refused_err)[-1] == ("facehpo: error: another pipeline is running on studies "
                                            "twin-*: wait for it, or pass another --name")
    from study.coordinator import PROFILES

    p = PROFILES["smoke"]
    for stage, n in (("coarse", p.coarse_trials), ("fine", p.fine_trials + 1), ("final", 1)):
        ts = trials(url, f"twin-{stage}")
        assert by_state(ts) == {"COMPLETE": n}, stage
        assert sorted(t.user_attrs["draw"] for t in ts) == list(range(n))


@pytest.fixture
def full_disk():
    """A 256 KiB tmpfs: writing a model (1.7 MB) or the sample crops (2 MB) fills it."""
    import os
    import subprocess
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="facehpo-full-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)],
                      capture_output=True).returncode != 0:
        os.rmdir(d)
        _missing("cannot mount a small tmpfs to fill up (needs root)")
    yield d
    subprocess.run(["umount", str(d)], check=True)
    os.rmdir(d)


def test_crops_on_a_full_disk_one_line_and_no_half_file(full_disk, tmp_path):
    r = facehpo("data", "sample", "--out", full_disk / "sample.npz", cwd=tmp_path,
                FACEHPO_HOME=tmp_path)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"facehpo: error: {full_disk}/sample.npz: cannot write "
                                "(No space left on device)")
    assert list(full_disk.iterdir()) == []


def test_model_on_a_full_disk_raises_model_error_and_leaves_no_model(full_disk):
    import numpy as np

    from model.cnn import ModelConfig, build_model
    from model.saving import ModelError, save_model

    model = build_model(ModelConfig(variant=1, lr=1e-3, reg=0.0))
    with pytest.raises(ModelError, match=r"model.keras: cannot write \(No space left on device\)"):
        save_model(model, np.zeros(3), np.ones(3), full_disk / "model", {"lr": 1e-3})
    assert [p.name for p in full_disk.rglob("*")] == ["model"]  # an empty folder: no model in it


@pytest.mark.slow
def test_final_stage_on_a_full_disk_keeps_its_trial_for_a_rerun(full_disk, tiny, tmp_path):
    """The final trial trains, then cannot save its model: one line, exit 1, the trial FAIL
    with the reason and re-queued; the same worker command with room to write finishes."""
    from dataset.archive import read_meta
    from study import storage as db
    from study.space import NarrowRule
    from study.stages import StageConfig, create_coarse, create_final, create_fine

    url = f"sqlite:///{tmp_path}/facehpo.db"
    s = db.open_storage(db.StorageConfig(url=url), create=True)
    for create in (lambda: create_coarse(s, StageConfig("disk", trials=2, epochs=1), read_meta(tiny)),
                   lambda: create_fine(s, StageConfig("disk", trials=1, epochs=1), NarrowRule(k=2))):
        _tell_all(create())
    create_final(s, "disk", epochs=1)
    s.engine.dispose()
    args = ("worker", "--study", "disk-final", "--storage", url, "--data", tiny)
    full = facehpo(*args, "--out", full_disk, cwd=tmp_path)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    assert error_lines(full.stderr)[-1].endswith("model.keras: cannot write (No space left on device)")
    ts = trials(url, "disk-final")
    assert by_state(ts) == {"FAIL": 1, "WAITING": 1}
    failed = next(t for t in ts if t.state == TrialState.FAIL)
    assert failed.user_attrs["fail_reason"].startswith("setup failure: ")
    assert "No space left on device" in failed.user_attrs["fail_reason"]
    assert not list(full_disk.rglob("model.keras")) and not list(full_disk.rglob("*.tmp"))
    room = facehpo(*args, "--out", tmp_path / "runs", cwd=tmp_path)
    assert room.returncode == 0, room.stderr
    assert by_state(trials(url, "disk-final")) == {"FAIL": 1, "COMPLETE": 1}
    assert (tmp_path / "runs" / "disk-final" / "model" / "model.keras").is_file()


def _tell_all(study):
    """Play the workers of a stage without training: a value per configuration."""
    from study.space import SearchSpace

    dists = SearchSpace.from_dict(study.user_attrs["space"]).distributions()
    while study.get_trials(states=(TrialState.WAITING,)):
        t = study.ask()
        for name, d in dists.items():
            t.suggest_float(name, d.low, d.high, log=True)
        t.set_user_attr("val_loss", 1.0)
        study.tell(t, 0.5 + 0.01 * t.number)
