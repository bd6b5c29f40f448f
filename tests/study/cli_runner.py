"""Run the real `facehpo` CLI in a subprocess, as users and containers do."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TF_NOISE = ("WARNING: All log messages", "I0000", "E0000", "W0000")


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FACEHPO_")}
    e.update({k: str(v) for k, v in extra.items()})
    return e


def facehpo(*args, cwd: Path, timeout: float = 600, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.cli", *map(str, args)], cwd=cwd,
                          env=env(**extra), capture_output=True, text=True, timeout=timeout)


def start(*args, cwd: Path, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "study.cli", *map(str, args)], cwd=cwd,
                            env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def error_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ start-up chatter."""
    return [l for l in stderr.splitlines() if l.strip() and not l.startswith(TF_NOISE)]
