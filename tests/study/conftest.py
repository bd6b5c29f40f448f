"""Fixtures of the SQL view tests (test_views*.py, test_sql_docs.py): one database per
backend per session, filled by tests/study/views_data.py, with the facehpo views created."""
from __future__ import annotations

import contextlib
import os
import time
import uuid

import optuna
import pytest
import sqlalchemy

from tests.study import views_data as data
from study import views


@contextlib.contextmanager
def _local_time(tz: str):
    """Write the studies with a local time that is not UTC: Optuna 5 must store naive UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def _build(url: str) -> sqlalchemy.Engine:
    storage = optuna.storages.RDBStorage(url)
    if url.startswith("sqlite"):  # Optuna commits every call: skip the fsyncs (15 s -> 3 s)
        sqlalchemy.event.listen(storage.engine, "connect",
                                lambda dbapi, _: dbapi.execute("PRAGMA synchronous = OFF"))
        storage.engine.dispose()
    with _local_time("Asia/Kolkata"):
        data.build_run(storage)
        data.build_other(storage)
    storage.engine.dispose()
    engine = sqlalchemy.create_engine(url)
    views.create_views(engine)
    return engine


@pytest.fixture(scope="session")
def views_pg_server(pg_url):
    """A fresh database on the test server: (its URL, an AUTOCOMMIT engine on pg_url)."""
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"facehpo_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
        conn.exec_driver_sql(f"ALTER DATABASE {name} SET synchronous_commit = off")  # speed
    yield sqlalchemy.engine.make_url(pg_url).set(database=name), admin
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture(scope="session")
def views_pg(views_pg_server):
    engine = _build(views_pg_server[0].render_as_string(hide_password=False))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def views_sqlite(tmp_path_factory):
    engine = _build(f"sqlite:///{tmp_path_factory.mktemp('views') / 'views.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(params=[pytest.param("views_pg", marks=pytest.mark.postgres), "views_sqlite"])
def views_engine(request):
    """Each test once on PostgreSQL, once on SQLite."""
    return request.getfixturevalue(request.param)
