"""Database errors in one sentence: the driver's cause, whether retrying can help, a hint.

Optuna wraps SQLAlchemy errors in StorageInternalError; `cause` digs out the driver's
first line ('connection refused', 'database "x" does not exist'), `is_transient` tells a
lost or refused connection (worth retrying) from a wrong setup, and `hint` names the
likely fix. `mask` hides the password of a URL in every message and log line.
"""
from __future__ import annotations

import sqlalchemy
from sqlalchemy import exc as sa_exc

from study.errors import SetupError


def parse(url: str) -> sqlalchemy.engine.URL:
    try:
        return sqlalchemy.engine.make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise SetupError(f"malformed storage URL {url!r}: expected e.g. "
                         "sqlite:///facehpo.db or postgresql+psycopg2://user:pw@host:5432/db") from None


def mask(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<malformed URL>"


def root(e: BaseException) -> BaseException:
    """The SQLAlchemy error behind `e`: Optuna wraps them in StorageInternalError."""
    seen = e
    while seen is not None and not isinstance(seen, sa_exc.SQLAlchemyError):
        seen = seen.__cause__ or seen.__context__
    return seen if seen is not None else e


def cause(e: BaseException) -> str:
    """The first line of the driver's message: 'connection refused', 'database "x" does not exist'."""
    r = root(e)
    orig = getattr(r, "orig", None) or r
    text = str(orig).strip().splitlines()
    return text[0].strip() if text else type(orig).__name__


# Driver messages that retrying will not fix (wrong name, credentials or path).
_PERMANENT = ("does not exist", "authentication failed", "no password supplied",
              "unable to open database file", "could not translate host name")


def is_transient(e: BaseException) -> bool:
    """A lost or refused connection (worth retrying), as opposed to a wrong setup."""
    r = root(e)
    lost = isinstance(r, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
        isinstance(r, sa_exc.DBAPIError) and r.connection_invalidated)
    return lost and not any(p in cause(r) for p in _PERMANENT)


def hint(e: BaseException) -> str:
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


def backoff(first: float, attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): `first`, doubling, at most 30."""
    return min(first * 2 ** (attempt - 1), 30.0)
