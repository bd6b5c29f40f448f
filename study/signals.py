"""SIGTERM (docker stop) and SIGINT for a worker's life, raised only at safe points.

An exception raised from a signal handler lands wherever the main thread is, and inside
TensorFlow's C++ code or a half-done database transaction it gets lost, mangled or
leaves a lock behind. So the handler only takes note, and `check()` raises Interrupted
at safe points instead: between trials, in the waits, and at the end of each epoch
(`Checked` wraps the trial the objective sees). A second signal stops the process at
once (its trial is then re-queued by the heartbeat check).
"""
from __future__ import annotations

import os
import signal
import threading

EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class Interrupted(BaseException):
    """Raised in the main thread after SIGTERM / SIGINT, at a safe point.
    BaseException so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(name: str) -> int:
    """The process exit code after the signal `name` ("SIGTERM" / "SIGINT") stopped it."""
    return EXIT_SIGTERM if name == "SIGTERM" else EXIT_SIGINT


class Signals:
    def __init__(self):
        self.pending: int | None = None
        self.wake = threading.Event()

    def __enter__(self) -> "Signals":
        self.old = {s: signal.signal(s, self._note) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _note(self, signum, frame):
        if self.pending is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.pending = signum
        self.wake.set()

    def check(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending)

    def sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.check()

    def __exit__(self, *exc):
        for s, handler in self.old.items():
            signal.signal(s, handler)


class Checked:
    """The trial as the objective sees it: every report (once per epoch) and attribute
    write first raises a pending Interrupted, from plain Python code inside Keras' fit.
    `trial` is Optuna's own, for APIs that check its type (upload_artifact, save_note)."""

    def __init__(self, trial, signals: Signals):
        self.trial, self._trial, self._signals = trial, trial, signals

    def __getattr__(self, name):
        return getattr(self._trial, name)

    def report(self, value, step):
        self._signals.check()
        self._trial.report(value, step)

    def set_user_attr(self, key, value):
        self._signals.check()
        self._trial.set_user_attr(key, value)
