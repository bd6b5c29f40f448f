"""Locks shared by every process using one study database.

PostgreSQL: a transaction-scoped advisory lock on its own connection (the server drops
it if the holder dies). SQLite: an flock on a file beside the database.
"""
from __future__ import annotations

import contextlib
import fcntl
import zlib

import sqlalchemy
from sqlalchemy import exc as sa_exc


class Lock:
    """A lock named `key` across processes, releasable early."""

    def __init__(self, storage, key: str):
        self.storage, self.key = storage, key
        self._conn = self._txn = self._file = None

    def acquire(self, wait: bool = True) -> bool:
        engine = self.storage.engine
        if engine.dialect.name == "postgresql":
            self._conn = engine.connect()
            self._txn = self._conn.begin()
            fn = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
            got = self._conn.execute(sqlalchemy.text(f"SELECT {fn}(hashtext(:k))"), {"k": self.key}).scalar()
            if got is False:
                self.release()
                return False
            return True
        db = engine.url.database
        if not db or db == ":memory:":
            return True
        self._file = open(f"{db}.{zlib.crc32(self.key.encode()):08x}.lock", "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            self.release()
            return False
        return True

    def release(self) -> None:
        """Idempotent; safe after a lost connection."""
        if self._txn is not None:
            try:
                self._txn.rollback()
                self._conn.close()
            except sa_exc.SQLAlchemyError:
                pass  # the connection is gone, and with it the lock
            self._txn = self._conn = None
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _NoLock:
    def release(self) -> None:
        pass

    def __enter__(self) -> "_NoLock":
        return self

    def __exit__(self, *exc) -> None:
        pass


def claim(storage, study: str) -> "Lock | _NoLock":
    """Held by a worker while Optuna pops a WAITING trial.

    SQLite only: Optuna's pop reads a WAITING trial, then marks it RUNNING; SQLite has no
    SELECT ... FOR UPDATE and pysqlite begins the transaction only at the UPDATE, so two
    processes can both take the same trial (one then fails to tell it). A server
    database locks the row; there no lock is taken."""
    if storage.engine.dialect.name == "sqlite":
        return Lock(storage, f"claim:{study}")
    return _NoLock()


@contextlib.contextmanager
def exclusive(storage, key: str, wait: bool = True):
    """A critical section across processes; with wait=False yields False if taken."""
    lock = Lock(storage, key)
    try:
        yield lock.acquire(wait)
    finally:
        lock.release()
