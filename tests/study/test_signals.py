"""SIGTERM (docker stop) and SIGINT (Ctrl-C) stop a real `facehpo worker` cleanly: the
trial it was training is FAIL with its reason and re-queued as a WAITING copy, never
left RUNNING; the exit code is 143 / 130; a worker waiting for others stops at once."""
import signal
import time
import zlib

import optuna
import pytest
from optuna.trial import TrialState

from tests.study.cli_runner import error_lines, facehpo, start
from tests.study.live import by_state, running_of, tiny_crops, trials, wait_for

STUDY = "sig-coarse"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_crops(tmp_path_factory.mktemp("data"))


def _init(url, tiny, cwd, trials_=2, epochs=40):
    r = facehpo("init", "--name", "sig", "--trials", trials_, "--epochs", epochs, "--storage", url,
                "--data", tiny, cwd=cwd)
    assert r.returncode == 0, r.stderr


def _interrupt_mid_trial(url, tiny, cwd, signum):
    """Start a worker, send `signum` while it trains; (process, its trial, stdout, stderr)."""
    w = start("worker", "--study", STUDY, "--storage", url, "--data", tiny, "--worker-id", "w-sig",
              cwd=cwd, FACEHPO_HEARTBEAT_INTERVAL=1, FACEHPO_GRACE_PERIOD=30)
    trial = wait_for(lambda: running_of(url, STUDY, "w-sig"), 120, "the worker to start a trial")
    time.sleep(1.0)  # inside model.fit
    w.send_signal(signum)
    out, err = w.communicate(timeout=60)
    return w, trial, out, err


def _check_released(url, trial, signame):
    ts = trials(url, STUDY)
    assert "RUNNING" not in by_state(ts)
    failed = next(t for t in ts if t.number == trial.number)
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"] == f"interrupted by {signame}; re-queued"
    copies = [t for t in ts if t.system_attrs.get("failed_trial") == trial.number]
    assert len(copies) == 1
    copy = copies[0]
    assert copy.state == TrialState.WAITING and copy.params == trial.params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(copy) == [trial.number]
    assert copy.user_attrs["draw"] == trial.user_attrs["draw"] and "fail_reason" not in copy.user_attrs
    return copy


@pytest.mark.postgres
@pytest.mark.slow
def test_sigterm_mid_trial_releases_it_and_a_restart_finishes(fresh_pg, tiny, tmp_path):
    _init(fresh_pg, tiny, tmp_path)
    w, trial, out, err = _interrupt_mid_trial(fresh_pg, tiny, tmp_path, signal.SIGTERM)
    assert w.returncode == 143, err
    assert "Traceback" not in err
    assert error_lines(err)[-1] == ("sig-coarse: this worker completed 0, failed 0, pruned 0; "
                                    "stopped by SIGTERM")
    _check_released(fresh_pg, trial, "SIGTERM")
    # nothing lost: a new worker trains both configurations, the released one once
    again = facehpo("worker", "--study", STUDY, "--storage", fresh_pg, "--data", tiny, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    ts = trials(fresh_pg, STUDY)
    assert by_state(ts) == {"COMPLETE": 2, "FAIL": 1}
    assert sorted(t.user_attrs["draw"] for t in ts if t.state == TrialState.COMPLETE) == [0, 1]


def test_sigint_mid_trial_on_sqlite_exits_130(tiny, tmp_path):
    url = f"sqlite:///{tmp_path}/facehpo.db"
    _init(url, tiny, tmp_path, trials_=1)
    w, trial, out, err = _interrupt_mid_trial(url, tiny, tmp_path, signal.SIGINT)
    assert w.returncode == 130, err
    assert "Traceback" not in err and "stopped by SIGINT" in err
    _check_released(url, trial, "SIGINT")


def test_sigterm_while_waiting_for_others(tiny, tmp_path):
    """Idle: nothing WAITING, one trial RUNNING elsewhere (held here). The worker polls,
    stops at once on SIGTERM with 143, and leaves the other trial alone."""
    url = f"sqlite:///{tmp_path}/facehpo.db"
    _init(url, tiny, tmp_path, trials_=1)
    held = optuna.load_study(study_name=STUDY, storage=url).ask()  # RUNNING, no heartbeat
    w = start("worker", "--study", STUDY, "--storage", url, "--data", tiny, "--worker-id", "idle",
              cwd=tmp_path)
    # the worker's first claim creates the claim lock file beside the database
    claim = tmp_path / f"facehpo.db.{zlib.crc32(f'claim:{STUDY}'.encode()):08x}.lock"
    wait_for(claim.exists, 120, "the worker to enter its loop")
    time.sleep(1.0)  # in its poll sleep
    assert w.poll() is None
    t0 = time.monotonic()
    w.send_signal(signal.SIGTERM)
    out, err = w.communicate(timeout=30)
    assert w.returncode == 143, err
    assert time.monotonic() - t0 < 10
    assert "Traceback" not in err and "completed 0, failed 0, pruned 0; stopped by SIGTERM" in err
    ts = trials(url, STUDY)
    assert [(t.number, t.state) for t in ts] == [(held.number, TrialState.RUNNING)]
