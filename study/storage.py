"""The only module that opens a database.

Every connection goes through `open_storage`, which builds Optuna's RDBStorage with
pool pre-ping, a small pool, heartbeats and RetryHeartbeatStaleTrialCallback, retries
the first connection with backoff, and turns database errors into one SetupError line
that names the URL (password masked) and the likely cause. `pop_only` and `claim` keep
workers to the trials a stage enqueued (study/worker.py).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy import exc as sa_exc

from study.errors import SetupError

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///facehpo.db"  # the embedded default: one process, a file in the cwd


@dataclass(frozen=True)
class StorageConfig:
    url: str = DEFAULT_URL
    heartbeat_interval: int = 60   # seconds between heartbeats of a running trial
    grace_period: int = 300        # a trial silent this long is failed and re-queued
    max_retry: int = 2             # re-queues of one configuration after stale failures
    connect_attempts: int = 5      # opening the database at start
    connect_backoff: float = 1.0   # seconds before the 2nd attempt, doubled each time (max 30)
    reconnect_attempts: int = 8    # a worker that lost the database mid-run (~2 min)

    def __post_init__(self):
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise SetupError(
                f"heartbeat interval {self.heartbeat_interval}s and grace period "
                f"{self.grace_period}s: need interval >= 1 and grace > interval")
        if self.connect_attempts < 1 or self.reconnect_attempts < 0 or not self.connect_backoff >= 0:
            raise SetupError(f"connect attempts {self.connect_attempts}, reconnect attempts "
                             f"{self.reconnect_attempts}, backoff {self.connect_backoff}s: need "
                             "attempts >= 1, reconnect attempts >= 0, backoff >= 0")

    @classmethod
    def resolve(cls, url: str | None = None, heartbeat_interval: int | None = None,
                grace_period: int | None = None) -> "StorageConfig":
        """Flag > environment variable > default."""
        env = os.environ
        cfg = cls(
            url=url or env.get("FACEHPO_STORAGE") or DEFAULT_URL,
            heartbeat_interval=heartbeat_interval or _env_int("FACEHPO_HEARTBEAT_INTERVAL", 60),
            grace_period=grace_period or _env_int("FACEHPO_GRACE_PERIOD", 300),
            connect_attempts=_env_int("FACEHPO_CONNECT_ATTEMPTS", 5),
            connect_backoff=_env_float("FACEHPO_CONNECT_BACKOFF", 1.0),
            reconnect_attempts=_env_int("FACEHPO_RECONNECT_ATTEMPTS", 8),
        )
        return replace(cfg, url=_with_password_file(cfg.url))


def _env_int(name: str, default: int) -> int:
    return _env(name, default, int, "an integer")


def _env_float(name: str, default: float) -> float:
    return _env(name, default, float, "a number")


def _env(name: str, default, kind, word: str):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SetupError(f"{name}={raw!r} is not {word}") from None


def backoff(cfg: StorageConfig, attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): doubling, at most 30."""
    return min(cfg.connect_backoff * 2 ** (attempt - 1), 30.0)


def _parse(url: str) -> sqlalchemy.engine.URL:
    try:
        return sqlalchemy.engine.make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise SetupError(f"malformed storage URL {url!r}: expected e.g. "
                         "sqlite:///facehpo.db or postgresql+psycopg2://user:pw@host:5432/db") from None


def _with_password_file(url: str) -> str:
    """Insert the password from FACEHPO_STORAGE_PASSWORD_FILE (a Docker secret) if the URL has none."""
    path = os.environ.get("FACEHPO_STORAGE_PASSWORD_FILE")
    if not path:
        return url
    parsed = _parse(url)
    if parsed.password:
        return url
    try:
        password = Path(path).read_text().strip()
    except OSError as e:
        raise SetupError(f"FACEHPO_STORAGE_PASSWORD_FILE {path}: {e.strerror}") from None
    return parsed.set(password=password).render_as_string(hide_password=False)


def mask(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<malformed URL>"


def _engine_kwargs(url: sqlalchemy.engine.URL) -> dict:
    if url.get_backend_name() == "postgresql":
        return {"pool_size": 2, "max_overflow": 2, "pool_recycle": 1800,  # pings: _ping_when_idle
                "connect_args": {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30}}
    if url.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


PING_AFTER_IDLE = 1.0  # seconds a pooled connection may sit unused before it is checked


def _ping_when_idle(engine) -> None:
    """pool_pre_ping, but only for connections idle longer than PING_AFTER_IDLE: one trial
    makes ~20 storage calls back to back, and a ping before each cost instant trials
    ~20 % of their throughput (benchmarks/bench_workers.py). A connection that waited
    through training is still checked, and a dead one replaced, before it is used."""
    @sqlalchemy.event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, proxy):
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as e:  # the pool discards this connection and checks out another
            raise sa_exc.DisconnectionError(str(e)) from e


def _root(e: BaseException) -> BaseException:
    """The SQLAlchemy error behind `e`: Optuna wraps them in StorageInternalError."""
    seen = e
    while seen is not None and not isinstance(seen, sa_exc.SQLAlchemyError):
        seen = seen.__cause__ or seen.__context__
    return seen if seen is not None else e


def cause(e: BaseException) -> str:
    """The first line of the driver's message: 'connection refused', 'database "x" does not exist'."""
    root = _root(e)
    orig = getattr(root, "orig", None) or root
    text = str(orig).strip().splitlines()
    return text[0].strip() if text else type(orig).__name__


# Driver messages that retrying will not fix (wrong name, credentials or path).
_PERMANENT = ("does not exist", "authentication failed", "no password supplied",
              "unable to open database file", "could not translate host name")


def is_transient(e: BaseException) -> bool:
    """A lost or refused connection (worth retrying), as opposed to a wrong setup."""
    root = _root(e)
    lost = isinstance(root, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
        isinstance(root, sa_exc.DBAPIError) and root.connection_invalidated)
    return lost and not any(p in cause(root) for p in _PERMANENT)


def _hint(e: BaseException) -> str:
    text = cause(e)
    if "does not exist" in text and "database" in text:
        return "create the database (createdb) or fix its name in the URL"
    if "authentication failed" in text or "no password supplied" in text:
        return "check the user and password (FACEHPO_STORAGE_PASSWORD_FILE)"
    if "unable to open database file" in text:
        return "does the SQLite file's folder exist and is it writable?"
    if is_transient(e) or "could not translate host name" in text:
        return "is the server running and are host and port right?"
    return "is this an Optuna database? run `facehpo init` to create one"


class NothingWaiting(Exception):
    """Inside `pop_only`: Optuna found no WAITING trial to pop and would have created one."""


_popping = threading.local()  # .storage: the storage in pop-only mode in this thread


@contextlib.contextmanager
def pop_only(storage):
    """Run a worker's `study.optimize(n_trials=1)` in this block: it only takes WAITING trials.

    When nothing is left to pop, Optuna's ask() would create a new trial and break the
    study's exact budget; here that creation raises NothingWaiting instead, before any
    row is written or a heartbeat thread started. Trials created from a template
    (enqueue_trial, add_trial, the retry callback) are not affected. Optuna's own
    stale-trial check at the start of each trial is skipped too: the worker runs its own
    (`study.worker._fail_stale`), which records why each stale trial failed.
    """
    if not isinstance(storage, _RDBStorage):
        raise TypeError("pop_only needs a storage from open_storage")
    outer, _popping.storage = getattr(_popping, "storage", None), storage
    try:
        yield
    finally:
        _popping.storage = outer


class _RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose heartbeat survives a database outage, with `pop_only`.

    Optuna records heartbeats in a thread that dies on the first database error, so a
    trial would go stale after any outage longer than a heartbeat interval even though
    its worker lives on. Here a lost connection is logged and the next beat tries again.
    """

    def _popping(self) -> bool:
        return getattr(_popping, "storage", None) is self

    def _create_new_trial(self, study_id: int, template_trial=None):
        # RDBStorage.create_new_trial and Optuna's _CachedStorage both come through here
        if template_trial is None and self._popping():
            raise NothingWaiting(f"no WAITING trial in study id {study_id}")
        return super()._create_new_trial(study_id, template_trial)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return [] if self._popping() else super()._get_stale_trial_ids(study_id)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
            self._beat_lost = False
        except Exception as e:
            if not is_transient(e):
                raise
            if not getattr(self, "_beat_lost", False):  # once per outage, not every beat
                log.warning("heartbeat of trial id %d not recorded (%s); retrying every %ds",
                            trial_id, cause(e), self.heartbeat_interval)
            self._beat_lost = True


def open_storage(cfg: StorageConfig, create: bool = False) -> optuna.storages.RDBStorage:
    """Open the study database. Only `create=True` (init, embedded pipeline) creates tables."""
    url = _parse(cfg.url)
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise SetupError(f"unsupported storage {mask(cfg.url)}: use sqlite:/// or postgresql+psycopg2://")
    if backend == "sqlite" and not create:
        db = url.database or ""
        if db and db != ":memory:" and not Path(db).is_file():
            raise SetupError(f"no database file {db} ({mask(cfg.url)}): run `facehpo init` first")
    last = None
    for attempt in range(1, cfg.connect_attempts + 1):
        try:
            with warnings.catch_warnings(), _creating(url, cfg.url, create):
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = _RDBStorage(
                    cfg.url, engine_kwargs=_engine_kwargs(url),
                    heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=cfg.max_retry),
                    skip_table_creation=not create)
            if backend == "postgresql":
                _ping_when_idle(storage.engine)
            return storage
        except (sa_exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            last = e
            # create: a client outside facehpo may be creating the same tables right now
            raced = create and isinstance(_root(e), sa_exc.IntegrityError)
            if not (is_transient(e) or raced) or attempt == cfg.connect_attempts:
                break
            delay = backoff(cfg, attempt)
            log.warning("database %s not reachable (%s); retry %d/%d in %.1fs",
                        mask(cfg.url), cause(e), attempt, cfg.connect_attempts - 1, delay)
            time.sleep(delay)
        except RuntimeError as e:  # Optuna's schema-version check
            raise SetupError(f"{mask(cfg.url)}: {cause(e)}") from None
    tries = f"after {cfg.connect_attempts} attempts; " if is_transient(last) and cfg.connect_attempts > 1 else ""
    raise SetupError(f"cannot open the study database {mask(cfg.url)}: {cause(last)} "
                     f"({tries}{_hint(last)})")


@contextlib.contextmanager
def _creating(url: sqlalchemy.engine.URL, raw: str, create: bool):
    """With `create`, one process at a time creates Optuna's tables: two first runs at
    once (two pipelines, two inits) would otherwise race on CREATE TABLE."""
    if not create or url.get_backend_name() not in ("postgresql", "sqlite"):
        yield
        return
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or not Path(url.database).parent.is_dir():
            yield  # in memory, or a folder that is not there: the open itself says so
            return
        with open(f"{url.database}.create.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            yield
        return
    engine = sqlalchemy.create_engine(raw, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext('facehpo:create-tables'))"))
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext('facehpo:create-tables'))"))
    finally:
        engine.dispose()


def study_names(storage) -> list[str]:
    return sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))


def load(storage, name: str, sampler=None, pruner=None) -> optuna.Study:
    """Load an existing study; a missing one is a setup error naming what exists."""
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        known = ", ".join(study_names(storage)) or "none"
        raise SetupError(f"no study named {name!r} in {mask(storage.url)} (studies there: {known})") from None


def exists(storage, name: str) -> bool:
    return name in study_names(storage)


class Lock:
    """A lock shared by every process using this storage, releasable early.

    PostgreSQL: a transaction-scoped advisory lock on its own connection (the server
    drops it if the holder dies). SQLite: an flock on a file beside the database.
    """

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


_COUNT = sqlalchemy.text("SELECT count(*) FROM trials WHERE study_id = :study AND state IN :states"
                         ).bindparams(sqlalchemy.bindparam("states", expanding=True))


def count_trials(storage, study_id: int, states) -> int:
    """How many of a study's trials are in `states` (TrialState members): one COUNT
    query, where Optuna's get_trials fetches every unfinished trial with its params
    and attributes (benchmarks/bench_workers.py)."""
    with storage.engine.connect() as conn:
        return conn.execute(_COUNT, {"study": study_id, "states": [s.name for s in states]}).scalar_one()


_OUTCOME = sqlalchemy.text(
    "SELECT t.state, v.value, (SELECT count(*) FROM trials WHERE study_id = t.study_id"
    " AND state IN ('COMPLETE', 'PRUNED', 'FAIL')) FROM trials t"
    " LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0"
    " WHERE t.trial_id = :trial")


def outcome(storage, trial_id: int) -> tuple[optuna.trial.TrialState, float | None, int]:
    """(state, value, finished trials in its study) of a trial a worker just ran, in one
    query: Optuna's get_trial would fetch the whole trial in six. An infinite value
    (never a validation accuracy) comes back as None."""
    with storage.engine.connect() as conn:
        state, value, finished = conn.execute(_OUTCOME, {"trial": trial_id}).one()
    return optuna.trial.TrialState[state], value, finished


class _NoLock:
    def release(self) -> None:
        pass

    def __enter__(self) -> "_NoLock":
        return self

    def __exit__(self, *exc) -> None:
        pass


def claim(storage, study: str) -> "Lock | _NoLock":
    """Held by a worker while Optuna pops a WAITING trial, released once it has one.

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
