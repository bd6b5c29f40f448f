"""The worker image built from the repository (CPU extras) and run as users run it."""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.docker.conftest import IMAGE, Compose, checkout_copy

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def image(docker_engine, tmp_path_factory) -> str:
    """IMAGE, built by `docker compose build` from a copy of the checkout (CPU override)."""
    compose = Compose(checkout_copy(tmp_path_factory.mktemp("image")), "facehpo-image",
                      {"POSTGRES_SECRET_FILE": "/dev/null"})
    start = time.monotonic()
    compose("build init", timeout=1800)
    print(f"\nimage {IMAGE} built in {time.monotonic() - start:.0f} s")
    return IMAGE


def _run(image: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess:
    argv = ["docker", "run", "--rm", *(["--entrypoint", entrypoint] if entrypoint else []), image, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_the_image_runs_the_cli_as_its_unprivileged_user(image):
    r = _run(image, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: facehpo"), r.stdout + r.stderr
    who = _run(image, "-c", "id -u; id -un", entrypoint="sh")
    assert who.stdout.split() == ["10001", "facehpo"], who.stdout + who.stderr


def test_optuna_dashboard_runs_in_the_image(image):
    r = _run(image, "--version", entrypoint="optuna-dashboard")
    assert r.returncode == 0 and r.stdout.strip()[:1].isdigit(), r.stdout + r.stderr


def test_the_cpu_image_has_cpu_only_tensorflow_and_no_cuda_errors(image):
    r = _run(image, "-c", "import tensorflow as tf; print(tf.sysconfig.get_build_info().get('is_cuda_build'), "
             "[d.device_type for d in tf.config.list_physical_devices()])", entrypoint="python3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "['CPU']"], r.stdout
    assert "cuInit" not in r.stderr and "CUDA" not in r.stderr, r.stderr
