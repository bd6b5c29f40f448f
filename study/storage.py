"""The only module that opens a database.

Every connection goes through `open_storage`, which builds Optuna's RDBStorage with a
small pool, idle-connection pings, heartbeats and RetryHeartbeatStaleTrialCallback,
retries the first connection with backoff, and turns database errors into one
SetupError line that names the URL (password masked) and the likely cause
(study/dberrors.py). Locks: study/locks.py; the queue of trials: study/queue.py.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy import exc as sa_exc

from study.dberrors import cause, is_transient, mask, parse
from study.dberrors import backoff as _backoff
from study.dberrors import hint as _hint
from study.dberrors import root as _root
from study.errors import SetupError
from study.options import option
from study.queue import PopGuard

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///facehpo.db"  # the embedded default: one process, a file in the cwd


@dataclass(frozen=True)
class StorageConfig:
    url: str = option(DEFAULT_URL, flag="--storage", env="FACEHPO_STORAGE", metavar="URL",
                      help="database URL, no password in it (FACEHPO_STORAGE_PASSWORD_FILE)")
    heartbeat_interval: int = option(60, flag="--heartbeat", aliases=("--heartbeat-interval",),
                                     env="FACEHPO_HEARTBEAT_INTERVAL", kind="positive", metavar="SECONDS",
                                     help="seconds between heartbeats of a running trial")
    grace_period: int = option(300, flag="--grace", aliases=("--grace-period",),
                               env="FACEHPO_GRACE_PERIOD", kind="positive", metavar="SECONDS",
                               help="a trial silent this long is failed and re-queued")
    max_retry: int = 2             # re-queues of one configuration after stale failures
    connect_attempts: int = option(5, env="FACEHPO_CONNECT_ATTEMPTS",
                                   help="attempts to open the database at start")
    connect_backoff: float = option(1.0, env="FACEHPO_CONNECT_BACKOFF",
                                    help="seconds before the 2nd attempt, doubled each time (max 30)")
    reconnect_attempts: int = option(8, env="FACEHPO_RECONNECT_ATTEMPTS",
                                     help="retries of a worker that lost the database mid-run (~2 min)")

    def __post_init__(self):
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise SetupError(
                f"heartbeat interval {self.heartbeat_interval}s and grace period "
                f"{self.grace_period}s: need interval >= 1 and grace > interval")
        if self.connect_attempts < 1 or self.reconnect_attempts < 0 or not self.connect_backoff >= 0:
            raise SetupError(f"connect attempts {self.connect_attempts}, reconnect attempts "
                             f"{self.reconnect_attempts}, backoff {self.connect_backoff}s: need "
                             "attempts >= 1, reconnect attempts >= 0, backoff >= 0")

    def with_secrets(self) -> "StorageConfig":
        """The URL with the password from FACEHPO_STORAGE_PASSWORD_FILE (a Docker secret)
        inserted, if it has none."""
        path = os.environ.get("FACEHPO_STORAGE_PASSWORD_FILE")
        if not path:
            return self
        parsed = parse(self.url)
        if parsed.password:
            return self
        try:
            password = Path(path).read_text().strip()
        except OSError as e:
            raise SetupError(f"FACEHPO_STORAGE_PASSWORD_FILE {path}: {e.strerror}") from None
        return replace(self, url=parsed.set(password=password).render_as_string(hide_password=False))


def backoff(cfg: StorageConfig, attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): doubling, at most 30."""
    return _backoff(cfg.connect_backoff, attempt)


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


class _RDBStorage(PopGuard, optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose heartbeat survives a database outage; pops through
    study/queue.py's guard.

    A heartbeat that fails kills the thread that records it, so a trial would go stale
    after any outage longer than a heartbeat interval even though its worker lives on.
    Here a lost connection is logged and the next beat tries again.
    """

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
    cfg = cfg.with_secrets()
    url = parse(cfg.url)
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
