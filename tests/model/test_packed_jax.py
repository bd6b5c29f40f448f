"""tests/model/test_packed.py again under JAX (KERAS_BACKEND=jax), in a process of its own:
Keras reads the backend once, at import, and this process already runs TensorFlow.

Needs the `jax` extra (JAX's CPU wheel is in the `test` extra); without it the test skips,
under CI=true it fails.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # JAX compiles every pack afresh: 4-8 minutes on the 2-core machine
def test_packed_model_under_jax(tmp_path):
    if importlib.util.find_spec("jax") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("jax is not installed (CI=true: required, not skipped)")
        pytest.skip("jax is not installed: pip install -e '.[test]'")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-W", "ignore::DeprecationWarning", str(ROOT / "tests/model/test_packed.py")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail and "failed" not in tail, tail
