"""`facehpo pipeline` on the embedded default (SQLite, built-in sample): runs all three
stages, resumes without redoing anything, and recovers from a killed process."""
import json
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.study.cli_runner import facehpo, start

pytestmark = pytest.mark.slow


def _states(db, name):
    # read only: a poller must not race the pipeline to create the tables
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}", skip_table_creation=True)
    study = optuna.load_study(study_name=name, storage=storage)
    return sorted(t.state.name for t in study.get_trials())


def test_pipeline_runs_resumes_and_records_everything(tmp_path):
    run = facehpo("pipeline", "--profile", "smoke", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "BUILT-IN SAMPLE" in run.stderr and "test_acc" in run.stdout
    db = tmp_path / "facehpo.db"
    assert _states(db, "facehpo-coarse") == ["COMPLETE"] * 4
    assert _states(db, "facehpo-fine") == ["COMPLETE"] * 3  # best coarse + 2 draws
    assert _states(db, "facehpo-final") == ["COMPLETE"]
    out = tmp_path / "runs" / "facehpo-final"
    final = json.loads((out / "final.json").read_text())
    assert "BUILT-IN SAMPLE" in final["note"] and 0 <= final["test_accuracy"] <= 1
    assert sum(map(sum, final["confusion"])) == 40  # the sample's 20 + 20 test crops
    assert (out / "model" / "model.keras").is_file() and (out / "final_confusion.png").is_file()
    trial = optuna.load_study(study_name="facehpo-final", storage=f"sqlite:///{db}").trials[0]
    assert trial.user_attrs["test_accuracy"] == final["test_accuracy"]
    assert trial.user_attrs["source_study"] == "facehpo-fine"
    again = facehpo("pipeline", "--profile", "smoke", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _states(db, "facehpo-coarse") == ["COMPLETE"] * 4  # nothing redone
    assert _states(db, "facehpo-final") == ["COMPLETE"]


def test_killed_pipeline_resumes_without_losing_or_duplicating(tmp_path):
    proc = start("pipeline", "--profile", "smoke", "--name", "k", cwd=tmp_path)
    db = tmp_path / "facehpo.db"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it in the middle of a coarse trial
        time.sleep(0.5)
        if not db.exists():
            continue
        try:
            states = _states(db, "k-coarse")
        except Exception:
            continue
        if "COMPLETE" in states and "RUNNING" in states:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "RUNNING" in _states(db, "k-coarse")
    again = facehpo("pipeline", "--profile", "smoke", "--name", "k", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="k-coarse", storage=f"sqlite:///{db}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(complete) == 4 and sorted(t.user_attrs["draw"] for t in complete) == [0, 1, 2, 3]
    assert len(failed) >= 1 and all("orphaned" in t.user_attrs["fail_reason"] for t in failed)
    retried = [t for t in complete if "failed_trial" in t.system_attrs]
    assert {t.system_attrs["failed_trial"] for t in retried} == {t.number for t in failed}
    assert _states(db, "k-final") == ["COMPLETE"]


def test_unknown_profile_is_exit_2_naming_the_choices(tmp_path):
    run = facehpo("pipeline", "--profile", "huge", cwd=tmp_path)
    assert run.returncode == 2 and "invalid choice: 'huge' (choose from 'quick', 'smoke', 'seed')" in run.stderr
    assert "{quick,smoke,seed}" in facehpo("pipeline", "--help", cwd=tmp_path).stdout
    assert "Traceback" not in run.stderr and not (tmp_path / "runs").exists()
