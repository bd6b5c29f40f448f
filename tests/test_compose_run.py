"""docker-compose.yml played as local processes against the real PostgreSQL server.

A check of the compose file's commands and environment without an engine (the real stack
runs in tests/docker/test_stack.py): each service's entrypoint + command + environment,
interpolated with tiny budgets, its volumes and secrets mapped to temporary folders and its `db` host to
the test server, run in the order its depends_on graph gives, with --profile final and
two replicas of each worker service (like `docker compose --profile final up
--scale worker=2 --scale worker-fine=2`). What this does NOT exercise: the image build,
the GPU reservations, Compose itself (tests/docker/ does, except the GPUs).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from tests import composefile as cf

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
NAME = "compose"
BUDGET = {"FACEHPO_NAME": NAME, "FACEHPO_TRIALS": "4", "FACEHPO_EPOCHS": "1", "FACEHPO_SEED": "3",
          "FACEHPO_K": "3", "FACEHPO_FINE_TRIALS": "2", "FACEHPO_FINE_EPOCHS": "1",
          "FACEHPO_FINAL_EPOCHS": "1", "FACEHPO_HEARTBEAT_INTERVAL": "5", "FACEHPO_GRACE_PERIOD": "60"}
PROFILES = {"fine", "final"}              # `data` needs FDDB; the test writes the crop file itself
SCALE = {"worker": 2, "worker-fine": 2}
LONG_RUNNING = ("always", "unless-stopped")
TIMEOUT = 900                             # seconds for one wave of one-shot services


class Local:
    """Maps one compose service onto this machine: argv and environment."""

    def __init__(self, doc: dict, tmp: Path, url: sqlalchemy.engine.URL):
        self.doc, self.tmp, self.url = doc, tmp, url
        self.bin = Path(sys.executable).parent
        self.secrets = {}
        for name in doc.get("secrets") or {}:
            path = tmp / "secrets" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(url.password or "unused-under-trust-auth")
            self.secrets[f"/run/secrets/{name}"] = str(path)

    def paths(self, svc: dict) -> dict[str, str]:
        """Container path -> host path for the service's named volumes and secrets."""
        named, mapping = set(self.doc.get("volumes") or {}), dict(self.secrets)
        for v in svc.get("volumes") or []:
            source, target = v.split(":")[:2]
            if source in named:
                mapping[target] = str(self.tmp / "volumes" / source)
                Path(mapping[target]).mkdir(parents=True, exist_ok=True)
        return mapping

    def rewrite(self, text: str, mapping: dict[str, str]) -> str:
        text = text.replace("@db:5432/", f"@{self.url.host}:{self.url.port or 5432}/")
        for inside in sorted(mapping, key=len, reverse=True):
            text = re.sub(rf"(?<![\w.-]){re.escape(inside)}(?=/|$|\s|\")", mapping[inside], text)
        return text

    def argv(self, svc: dict, port: int | None = None) -> list[str]:
        mapping = self.paths(svc)
        entry = svc.get("entrypoint") or cf.dockerfile_entrypoint()
        argv = [self.rewrite(a, mapping) for a in [*entry, *cf.command(svc)]]
        if argv[0] == "facehpo":
            argv[0] = str(self.bin / "facehpo")
        if port is not None:  # a server: loopback and a free port instead of the container's
            argv = ["127.0.0.1" if a == "0.0.0.0" else a for a in argv]
            argv[argv.index("--port") + 1] = str(port)
        return argv

    def env(self, svc: dict) -> dict[str, str]:
        mapping = self.paths(svc)
        env = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
        env.update(PATH=f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   FACEHPO_HOME=str(self.tmp / "home"), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        env.update({k: self.rewrite(v or "", mapping) for k, v in cf.environment(svc).items()})
        return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)


def _start_server(local: Local, svc: dict, logs: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    out = (logs / "dashboard.log").open("w")
    proc = subprocess.Popen(local.argv(svc, port), env=local.env(svc), stdout=out, stderr=subprocess.STDOUT)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        try:
            _api(base, "/api/studies")
            return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dashboard did not serve: {(logs / 'dashboard.log').read_text()[-1500:]}")
            time.sleep(0.5)


def _run_wave(local: Local, doc: dict, names: list[str], logs: Path) -> None:
    procs = []
    for name in names:
        svc = doc["services"][name]
        for i in range(SCALE.get(name, 1)):
            log = logs / f"{name}-{i + 1}.log"
            env = local.env(svc) | {"FACEHPO_WORKER_ID": f"{name}-{i + 1}"}
            procs.append((log, subprocess.Popen(local.argv(svc), env=env, stdout=log.open("w"),
                                                 stderr=subprocess.STDOUT)))
    deadline = time.monotonic() + TIMEOUT
    for log, p in procs:
        code = p.wait(timeout=max(1, deadline - time.monotonic()))
        assert code == 0, f"{log.stem} exited {code}:\n{log.read_text()[-3000:]}"


def _states(storage: str, stage: str) -> dict[str, int]:
    trials = optuna.load_study(study_name=f"{NAME}-{stage}", storage=storage).get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def test_compose_services_run_locally(fresh_pg, tmp_path):
    from dataset.sample import build_sample

    url = sqlalchemy.engine.make_url(fresh_pg)
    doc = cf.interpolate(cf.load(), BUDGET | {"POSTGRES_USER": url.username, "POSTGRES_DB": url.database})
    local = Local(doc, tmp_path, url)
    data = Path(local.paths(doc["services"]["worker"])["/data"])
    build_sample(data / "crops.npz", seed=1)  # what `docker compose run data` leaves in the volume
    logs = tmp_path / "logs"
    logs.mkdir()
    server, base = None, None
    try:
        for wave in cf.waves(doc, PROFILES):
            for name in [n for n in wave if doc["services"][n].get("restart") in LONG_RUNNING]:
                server, base = _start_server(local, doc["services"][name], logs)
            _run_wave(local, doc, [n for n in wave if doc["services"][n].get("restart") not in LONG_RUNNING],
                      logs)

        coarse, fine, final = (_states(fresh_pg, s) for s in ("coarse", "fine", "final"))
        assert sum(coarse.values()) == 4 and set(coarse) <= {"COMPLETE", "FAIL"}, coarse
        assert sum(fine.values()) == 2 + 1 and set(fine) <= {"COMPLETE", "FAIL"}, fine
        assert final == {"COMPLETE": 1}, final
        best = optuna.load_study(study_name=f"{NAME}-final", storage=fresh_pg).best_trial
        assert 0.0 <= best.user_attrs["test_accuracy"] <= 1.0
        workers = {t.user_attrs.get("worker") for s in ("coarse", "fine") for t in
                   optuna.load_study(study_name=f"{NAME}-{s}", storage=fresh_pg).trials}
        assert workers <= {"worker-1", "worker-2", "worker-fine-1", "worker-fine-2"}, workers

        # the dashboard service, started with the compose command line, serves all three
        ids = {s["study_name"]: s["study_id"] for s in _api(base, "/api/studies")["study_summaries"]}
        assert set(ids) == {f"{NAME}-coarse", f"{NAME}-fine", f"{NAME}-final"}
        shown = _api(base, f"/api/studies/{ids[f'{NAME}-coarse']}?after=0")["trials"]
        assert len(shown) == 4
        out = Path(local.paths(doc["services"]["final"])["/out"])
        _check_final_artifacts(fresh_pg, base, ids[f"{NAME}-final"], out)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)


def _check_final_artifacts(storage: str, base: str, study_id: int, out: Path) -> None:
    """The final run's figures are Optuna artifacts in /out/artifacts, served by the dashboard."""
    from optuna.artifacts import get_all_artifact_meta

    study = optuna.load_study(study_name=f"{NAME}-final", storage=storage)
    trial = study.trials[0]
    metas = [(trial._trial_id, m) for m in get_all_artifact_meta(trial, storage=study._storage)]
    metas += [(None, m) for m in get_all_artifact_meta(study)]
    assert any(m.filename.endswith(".png") for _, m in metas), \
        f"the final stage published no figure as an artifact (files in {out}: {sorted(p.name for p in out.rglob('*.png'))})"
    for trial_id, m in metas:
        assert (out / "artifacts" / m.artifact_id).is_file()
        where = f"{study_id}/{trial_id}" if trial_id is not None else f"{study_id}"
        with urllib.request.urlopen(f"{base}/artifacts/{where}/{m.artifact_id}", timeout=10) as r:
            body = r.read()
        assert body == (out / "artifacts" / m.artifact_id).read_bytes(), m.filename
