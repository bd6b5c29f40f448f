"""`--sampler` / `--round` through the real CLI on PostgreSQL: init + worker run a TPE
study in rounds to its exact budget, and a killed pipeline resumes with the fine stage's
sampler as it was stored (and refuses another one in one line)."""
import signal
import time

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from study import rounds
from tests.study.cli_runner import error_lines, facehpo, start
from tests.study.live import tiny_crops, trials

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
BEAT = ("--heartbeat-interval", "1", "--grace-period", "3")


def _lineage(url, study):
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sqlalchemy.text(
                "SELECT sampler, round_size, seed, sampler_seed FROM facehpo_lineage WHERE study = :s"),
                {"s": study}).mappings().one())
    finally:
        engine.dispose()


def test_init_and_worker_run_a_tpe_study_in_rounds(fresh_pg, tmp_path):
    data = tiny_crops(tmp_path)
    init = facehpo("init", "--storage", fresh_pg, "--data", data, "--name", "c", "--trials", "5",
                   "--epochs", "1", "--sampler", "tpe", "--round", "2", "--seed", "3", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "2 trial(s) enqueued" in init.stdout and "tpe in rounds of 2" in init.stdout
    work = facehpo("worker", "--storage", fresh_pg, "--data", data, "--study", "c-coarse", *BEAT,
                   cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    ts = trials(fresh_pg, "c-coarse")
    assert len(ts) == 5 and {t.state for t in ts} <= {TrialState.COMPLETE, TrialState.FAIL}
    assert sorted((t.user_attrs["draw"], t.user_attrs["round"]) for t in ts) == \
        [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2)]
    assert _lineage(fresh_pg, "c-coarse") == {"sampler": "tpe", "round_size": 2, "seed": 3, "sampler_seed": 3}
    bad = facehpo("init", "--storage", fresh_pg, "--data", data, "--name", "d", "--round", "2",
                  cwd=tmp_path)
    assert bad.returncode == 1 and error_lines(bad.stderr) == [
        "facehpo: error: --round sets the rounds of a tpe or gp study: add --sampler tpe or gp"]


def test_killed_pipeline_resumes_with_the_stored_sampler(fresh_pg, tmp_path):
    args = ("pipeline", "--storage", fresh_pg, "--profile", "smoke", "--name", "p", *BEAT)
    proc = start(*args, "--sampler", "tpe", cwd=tmp_path)

    def fine_started():
        try:
            ts = trials(fresh_pg, "p-fine")
        except Exception:  # not created yet
            return False
        return any(t.state in (TrialState.RUNNING, TrialState.COMPLETE) for t in ts)

    deadline = time.monotonic() + 400
    while not fine_started():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    other = facehpo(*args, "--sampler", "gp", cwd=tmp_path)
    assert other.returncode == 1
    assert "exists with other settings (sampler 'tpe' != 'gp')" in error_lines(other.stderr)[-1]
    again = facehpo(*args, cwd=tmp_path)  # no --sampler: the stored one
    assert again.returncode == 0, again.stderr
    assert "tpe in rounds of 2" in again.stderr
    fine = optuna.load_study(study_name="p-fine", storage=fresh_pg)
    assert (fine.user_attrs["sampler"], fine.user_attrs["round_size"]) == ("tpe", 2)
    plan = rounds.RoundPlan.from_attrs(fine.user_attrs)
    assert rounds.all_drawn(plan, fine.trials) and plan.n_trials == 3
    assert [t.user_attrs["round"] for _, t in sorted(rounds.latest(fine.trials).items())] == [0, 0, 1]
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in fine.trials)
    lineage = _lineage(fresh_pg, "p-fine")
    assert lineage["sampler"] == "tpe" and lineage["sampler_seed"] == fine.user_attrs["sampler_seed"]
    assert lineage["sampler_seed"] != lineage["seed"]  # a fine study's draws are its own
    assert _lineage(fresh_pg, "p-coarse")["sampler"] == "random"
    assert [t.state for t in optuna.load_study(study_name="p-final", storage=fresh_pg).trials] == \
        [TrialState.COMPLETE]
