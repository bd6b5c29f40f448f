"""The compose stack as docs/containers.md documents it, on a real engine (CPU override,
tiny budgets, the built-in sample instead of FDDB): the single-host walkthrough line by
line, the dashboard and the reader role over the published loopback ports, a worker
stopped (SIGTERM) and killed (SIGKILL) mid-trial, and `down -v`."""
from __future__ import annotations

import json
import re
import secrets
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from tests.conftest import ROOT
from tests.docker.conftest import Compose, checkout_copy, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]
DOC = ROOT / "docs" / "containers.md"
MARKER = "<!-- walkthrough: single-host"
BUDGET = {"FACEHPO_DATA": "", "FACEHPO_TRIALS": "4", "FACEHPO_EPOCHS": "1", "FACEHPO_K": "3",
          "FACEHPO_FINE_TRIALS": "2", "FACEHPO_FINE_EPOCHS": "1", "FACEHPO_FINAL_EPOCHS": "1"}


def walkthrough() -> list[str]:
    """The command lines of the single-host walkthrough block in docs/containers.md."""
    text = DOC.read_text()
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARKER):], re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _stack(tmp: Path, project: str, **env: str) -> Compose:
    ports = {"POSTGRES_HOST_PORT": str(free_port()), "DASHBOARD_HOST_PORT": str(free_port())}
    return Compose(checkout_copy(tmp), project, {**BUDGET, **ports, **env})


def _storage(c: Compose, user: str = "facehpo", password: str | None = None) -> str:
    password = password or (c.workdir / "secrets" / "postgres_password").read_text().strip()
    return (f"postgresql+psycopg2://{user}:{password}@127.0.0.1:"
            f"{c.env['POSTGRES_HOST_PORT']}/facehpo")


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _exit_codes(c: Compose, service: str) -> list[int]:
    ids = c(f"ps -aq {service}").stdout.split()
    out = c.sh("docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' " + " ".join(ids)).stdout
    return [int(code) if status == "exited" else -1 for status, code in (ln.split() for ln in out.splitlines())]


def _check_budget(trials, budget: int) -> None:
    """Exactly `budget` COMPLETE trials, each draw once; nothing left WAITING or RUNNING."""
    complete = [t.user_attrs["draw"] for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(complete) == list(range(budget)), [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]


@pytest.fixture(scope="module")
def projects():
    """Every project started here; torn down at the end even when a test failed."""
    started: list[Compose] = []
    yield started
    for c in started:
        c.down()


def test_the_documented_single_host_walkthrough_runs(docker_engine, projects, tmp_path):
    c = _stack(tmp_path, f"facehpo-walk-{secrets.token_hex(3)}")
    projects.append(c)
    start = time.monotonic()
    for line in walkthrough():
        if "--profile data" in line:  # the doc: skip it with FACEHPO_DATA= (the built-in sample)
            continue
        c.sh(line, timeout=1800)
    print(f"\nwalkthrough ran in {time.monotonic() - start:.0f} s")
    assert _exit_codes(c, "worker") == [0, 0] and _exit_codes(c, "worker-fine") == [0, 0]
    assert _exit_codes(c, "final") == [0]

    storage = _storage(c)
    _check_budget(_trials(storage, "facehpo-coarse"), 4)
    _check_budget(_trials(storage, "facehpo-fine"), 2 + 1)  # 2 fine draws + the best coarse trial
    (final,) = _trials(storage, "facehpo-final")
    assert final.state == TrialState.COMPLETE and 0.0 <= final.user_attrs["test_accuracy"] <= 1.0
    out = c.workdir / "facehpo-out" / "facehpo-final"  # `docker cp` of the `out` volume
    assert json.loads((out / "final.json").read_text())
    assert (out / "model" / "model.keras").is_file() and list(out.glob("*.png"))

    base = f"http://127.0.0.1:{c.env['DASHBOARD_HOST_PORT']}"
    with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as r:
        shown = {s["study_name"]: s["study_id"] for s in json.load(r)["study_summaries"]}
    assert set(shown) == {"facehpo-coarse", "facehpo-fine", "facehpo-final"}
    with urllib.request.urlopen(f"{base}/api/studies/{shown['facehpo-coarse']}?after=0", timeout=10) as r:
        coarse = json.load(r)
    assert len(coarse["trials"]) == 4 and coarse["objective_names"] == ["validation accuracy"]

    _check_reader(c)


def _check_reader(c: Compose) -> None:
    """The reader role, made as docs/containers.md says, over the published port."""
    c.env["FACEHPO_READER_PASSWORD"] = password = secrets.token_hex(12)
    c("run --rm --no-deps -e FACEHPO_READER_PASSWORD init db reader-role")
    engine = sqlalchemy.create_engine(_storage(c, "facehpo_reader", password))
    try:
        with engine.connect() as conn:
            n = conn.execute(sqlalchemy.text("SELECT count(*) FROM facehpo_trials")).scalar()
            assert n >= 4 + 3 + 1
            assert conn.execute(sqlalchemy.text("SELECT count(*) FROM facehpo_best")).scalar() == 3
        for sql in ("DELETE FROM trials", "SELECT count(*) FROM trials",
                    "CREATE TABLE facehpo_x (i int)", "UPDATE studies SET study_name = 'x'"):
            with engine.connect() as conn, pytest.raises(sqlalchemy.exc.DBAPIError):
                conn.execute(sqlalchemy.text(sql))
    finally:
        engine.dispose()


def _wait_for(what: str, predicate, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _mid_trial(storage: str, study: str):
    """The RUNNING trial once it has reported an epoch, else None."""
    running = [t for t in _trials(storage, study) if t.state == TrialState.RUNNING]
    return running[0] if running and running[0].intermediate_values else None


def test_a_stopped_or_killed_worker_gives_its_trial_back(docker_engine, projects, tmp_path):
    # long enough trials to stop one mid-way; a grace period well above one epoch
    c = _stack(tmp_path, f"facehpo-sig-{secrets.token_hex(3)}", FACEHPO_NAME="sig",
               FACEHPO_TRIALS="2", FACEHPO_EPOCHS="25",
               FACEHPO_HEARTBEAT_INTERVAL="2", FACEHPO_GRACE_PERIOD="12")
    projects.append(c)
    for line in walkthrough()[:5]:  # .env, the secret, build
        c.sh(line, timeout=1800)
    c("up -d --scale worker=1 db init worker")
    storage, study = _storage(c), "sig-coarse"

    # SIGTERM (`docker compose stop`): exit 143 at the end of the epoch, the trial re-queued
    first = _wait_for("a coarse trial mid-way", lambda: _mid_trial(storage, study))
    c("stop worker")
    assert _exit_codes(c, "worker") == [143]
    after = {t.number: t for t in _trials(storage, study)}
    assert after[first.number].state == TrialState.FAIL
    assert "SIGTERM" in after[first.number].user_attrs["fail_reason"]
    assert [t for t in after.values() if t.state == TrialState.WAITING
            and t.user_attrs["draw"] == first.user_attrs["draw"]], "not re-queued"

    # SIGKILL: no goodbye; the trial stays RUNNING until its heartbeat expires, then a
    # new worker fails it, re-queues it and finishes the study
    c("start worker")
    second = _wait_for("a trial mid-way after the restart", lambda: _mid_trial(storage, study))
    c("kill -s SIGKILL worker")
    assert _exit_codes(c, "worker") == [137]
    assert {t.number: t.state for t in _trials(storage, study)}[second.number] == TrialState.RUNNING
    c("up -d --no-deps --scale worker=2 worker")
    _wait_for("both workers to exit", lambda: all(code >= 0 for code in _exit_codes(c, "worker")))
    assert _exit_codes(c, "worker") == [0, 0]
    trials = {t.number: t for t in _trials(storage, study)}
    assert trials[second.number].state == TrialState.FAIL
    assert "no heartbeat" in trials[second.number].user_attrs["fail_reason"]
    _check_budget(list(trials.values()), 2)


def test_down_v_leaves_nothing_behind(docker_engine, projects):
    assert projects, "no stack was started"
    for c in projects:
        c.down()
        label = f"label=com.docker.compose.project={c.project}"
        for kind in ("ps -aq", "volume ls -q", "network ls -q"):
            left = c.sh(f"docker {kind} --filter {label}").stdout.split()
            assert not left, f"{c.project}: `docker {kind}` still lists {left}"
