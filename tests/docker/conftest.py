"""A real Docker engine for the `docker` tests, set up by tests/docker/engine.sh.

Where no engine can start (not root, no apt-get: engine.sh exits 2) the tests skip with
the reason; a setup that fails otherwise fails them under CI=true (skips elsewhere).
The engine is stopped at the end of the session if this session started it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, _missing

ENGINE = Path(__file__).with_name("engine.sh")
PIDFILE = Path("/run/facehpo-dockerd.pid")
CI_OVERRIDE = "tests/docker/compose.ci.yml"
COMPOSE_FILE = f"docker-compose.yml:docker-compose.cpu.yml:{CI_OVERRIDE}"
IMAGE = "facehpo-test:cpu"
# what a user's checkout holds that the image and the compose stack use
PROJECT_FILES = ("Dockerfile", ".dockerignore", "docker-compose.yml", "docker-compose.cpu.yml",
                 ".env.example", "pyproject.toml", "README.md", "dataset", "model", "study",
                 CI_OVERRIDE)


def _engine_running() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def docker_engine():
    """The engine, Compose v2 and the stand-in images; stops a dockerd it started."""
    was_running = _engine_running()
    try:
        r = subprocess.run(["bash", str(ENGINE)], capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        _missing("tests/docker/engine.sh took over 20 minutes")
    if r.returncode == 2:
        pytest.skip(f"no Docker engine can start here: {r.stderr.strip().splitlines()[-1]}")
    if r.returncode != 0:
        _missing(f"Docker engine setup failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    yield
    if not was_running and PIDFILE.is_file():
        os.kill(int(PIDFILE.read_text()), signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Compose:
    """`docker compose` for one project in a copy of the checkout, with the CPU and CI
    overrides; `env` overrides .env (Compose gives the environment precedence)."""

    def __init__(self, workdir: Path, project: str, env: dict[str, str]):
        self.workdir, self.project = workdir, project
        self.env = {**os.environ, "COMPOSE_FILE": COMPOSE_FILE, "COMPOSE_PROJECT_NAME": project,
                    "FACEHPO_IMAGE": IMAGE, **env}

    def sh(self, line: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["bash", "-c", line], cwd=self.workdir, env=self.env, text=True,
                           capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            pytest.fail(f"`{line}` exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")
        return r

    def __call__(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        return self.sh(" ".join(["docker", "compose", *args]), timeout, check)

    def down(self) -> None:
        self("--profile '*' down -v --remove-orphans -t 5", check=False)


def checkout_copy(dest: Path) -> Path:
    """The files of a checkout that the stack needs, so .env and secrets/ stay out of ROOT."""
    for name in PROJECT_FILES:
        src, dst = ROOT / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    return dest
