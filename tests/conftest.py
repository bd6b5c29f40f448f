"""Shared fixtures: the real PostgreSQL server and the real FDDB data set.

Tests that need either skip with a reason when it is missing, except under CI=true,
where a missing PostgreSQL or FDDB fails the run (CI must exercise the real things).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
DEFAULT_FDDB = ROOT.parent / "shared" / "fddb"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required, not skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("FACEHPO_TEST_PG", DEFAULT_PG)
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as e:  # any connection failure means "no server here"
        _missing(f"PostgreSQL not reachable at {url}: {type(e).__name__}")
    return url


@pytest.fixture(scope="session")
def fddb_root() -> Path:
    root = Path(os.environ.get("FDDB_ROOT", DEFAULT_FDDB))
    if not (root / "FDDB-folds").is_dir():
        _missing(f"FDDB not found at {root} (set FDDB_ROOT)")
    return root


@pytest.fixture
def fresh_pg(pg_url):
    """A new, empty PostgreSQL database for one test, dropped afterwards: its URL."""
    import uuid

    import sqlalchemy

    name = f"facehpo_t_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium():
    """A headless Debian Chromium driven by playwright (never a downloaded browser build)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    import shutil

    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
