"""For tests that run real workers: tiny crop files, polling the study database."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from dataset.archive import load_crops, save_crops
from dataset.sample import build_sample


def tiny_crops(folder: Path, train: int = 40, val: int = 20, test: int = 20) -> Path:
    """`folder/tiny-TRAIN.npz`: the first train / val / test crops of the built-in sample,
    half faces, half non-faces per split (each count must be even)."""
    out = folder / f"tiny-{train}-{val}-{test}.npz"
    if out.is_file():
        return out
    sample = folder / "sample.npz"
    s = load_crops(sample) if sample.is_file() else build_sample(sample)
    keep = np.concatenate([np.flatnonzero((s.split == i) & (s.y == c))[: n // 2]
                           for i, n in enumerate((train, val, test)) for c in (0, 1)])
    save_crops(out, s.x[keep], s.y[keep], s.split[keep], s.source[keep], s.box[keep],
               {"source": "builtin-sample", "note": "tiny cut of the built-in sample, for tests"})
    return out


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    """Poll `check()` until it returns something truthy; that value, or AssertionError."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def trials(url: str, study: str) -> list[FrozenTrial]:
    """All trials of `study`, read through a fresh storage (no cache, no heartbeat)."""
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def running_of(url: str, study: str, worker: str) -> FrozenTrial | None:
    """The RUNNING trial that worker `worker` (its FACEHPO_WORKER_ID) is training, if any."""
    return next((t for t in trials(url, study)
                 if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == worker), None)


def by_state(ts) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in ts:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


class Throwaway:
    """A PostgreSQL server of our own (initdb + pg_ctl in a temp folder, a free port on
    127.0.0.1, trust auth), to stop and start under running workers."""

    def __init__(self, bindir: Path, root: Path, user: str | None):
        self.bindir, self.root, self.user = bindir, root, user
        self.data, self.log = root / "data", root / "server.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, tool: str, *args) -> None:
        cmd = [str(self.bindir / tool), *map(str, args)]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """fast: the server ends every session, as a restart or crash-restart does."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def close(self) -> None:
        import shutil

        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def create_db(self, name: str) -> str:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url.rsplit("/", 1)[0] + f"/{name}"


def throwaway_pg(missing) -> "Throwaway":
    """Start a Throwaway server; `missing(reason)` skips or fails when that is impossible.
    As root, initdb refuses to run: the server then runs as the `postgres` user."""
    import glob
    import os
    import pwd
    import shutil
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found[-1]:
        missing("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    user = None
    root = Path(tempfile.mkdtemp(prefix="facehpo-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and no `postgres` user to run initdb as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        user = "postgres"
    server = Throwaway(Path(found[-1]).parent, root, user)
    server.start()
    return server
