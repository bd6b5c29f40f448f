"""check_schema refuses a schema the views were not written for; the PostgreSQL reader
role can SELECT the views and nothing else (checked by logging in as it)."""
from __future__ import annotations

import hashlib
import uuid

import optuna
import pytest
import sqlalchemy
from sqlalchemy import exc, text

from tests.study import views_data as data
from study import views
from study.errors import SetupError

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def scratch(tmp_path):
    """A SQLite database with Optuna's tables and one facehpo study."""
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    optuna.create_study(storage=url, study_name="s").set_user_attr("stage", "coarse")
    engine = sqlalchemy.create_engine(url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("change, message", [
    ("UPDATE alembic_version SET version_num = 'v9.9.9.z'", "alembic head is v9.9.9.z"),
    ("ALTER TABLE trial_params RENAME COLUMN param_value TO value",
     "trial_params lacks column(s) param_value"),
    ("DROP TABLE trial_intermediate_values", "table trial_intermediate_values is missing"),
    ("UPDATE version_info SET schema_version = 13", "schema_version is [13]"),
])
def test_schema_mismatch_stops_create_views(scratch, change, message):
    views.check_schema(scratch)
    with scratch.begin() as conn:
        conn.exec_driver_sql(change)
    with pytest.raises(views.SchemaMismatch) as e:
        views.create_views(scratch)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert views.installed_version(scratch) is None


def test_schema_mismatch_on_empty_database_and_other_optuna(tmp_path, scratch, monkeypatch):
    empty = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(views.SchemaMismatch, match="no Optuna tables"):
        views.check_schema(empty)
    monkeypatch.setattr(views, "OPTUNA_RANGE", (6, 7))
    with pytest.raises(views.SchemaMismatch, match=f"optuna {optuna.__version__} is installed"):
        views.check_schema(scratch)


@pytest.mark.postgres
def test_schema_mismatch_on_postgres(views_pg):
    with views_pg.connect() as conn:  # changed inside a transaction, then rolled back
        conn.exec_driver_sql("ALTER TABLE trials RENAME COLUMN datetime_start TO started")
        with pytest.raises(views.SchemaMismatch, match="trials lacks column.s. datetime_start"):
            views.check_schema(conn)
        conn.rollback()
    views.check_schema(views_pg)


def test_reader_role_needs_postgres(scratch):
    with pytest.raises(SetupError, match="only on PostgreSQL"):
        views.create_reader_role(scratch)


@pytest.fixture(scope="module")
def reader(views_pg, views_pg_server):
    """A reader role of this session, and an engine logged in as it (trust auth)."""
    role = f"facehpo_reader_{uuid.uuid4().hex[:8]}"
    views.create_reader_role(views_pg, role=role)
    engine = sqlalchemy.create_engine(views_pg.url.set(username=role, password=None),
                                      poolclass=sqlalchemy.pool.NullPool)  # fresh sessions
    yield role, engine
    engine.dispose()
    with views_pg.begin() as conn:
        conn.exec_driver_sql(f"DROP OWNED BY {role}")
    with views_pg_server[1].connect() as conn:
        conn.exec_driver_sql(f"DROP ROLE {role}")


@pytest.mark.postgres
def test_reader_reads_every_view(reader, views_pg):
    _, engine = reader
    for view in views.VIEW_NAMES:
        sql = f"SELECT * FROM {view}"
        assert sorted(map(repr, data.rows(engine, sql))) == sorted(map(repr, data.rows(views_pg, sql)))
    assert data.rows(engine, "SELECT COUNT(*) AS n FROM facehpo_trials") == [{"n": 30}]


FORBIDDEN = [
    "SELECT * FROM trials", "SELECT * FROM trial_user_attributes",
    "SELECT * FROM alembic_version", "INSERT INTO studies (study_name) VALUES ('evil')",
    "UPDATE trials SET state = 'FAIL'", "DELETE FROM trial_values", "TRUNCATE trials",
    "CREATE TABLE evil (x int)", "CREATE VIEW evil AS SELECT 1", "CREATE SCHEMA evil",
    "CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
]


@pytest.mark.postgres
@pytest.mark.parametrize("sql", FORBIDDEN)
def test_reader_cannot_read_tables_or_write(reader, sql):
    _, engine = reader
    with engine.connect() as conn:
        conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        conn.commit()  # the next transaction is read-write: only privileges stop the write
        assert conn.exec_driver_sql("SHOW transaction_read_only").scalar_one() == "off"
        with pytest.raises(exc.ProgrammingError) as e:
            conn.exec_driver_sql(sql)
        assert e.value.orig.pgcode == "42501"  # insufficient_privilege, not read-only


@pytest.mark.postgres
def test_reader_has_no_write_right_on_views(reader):
    # Writing to these views fails anyway (they are not updatable); the right is absent too.
    for view in views.VIEW_NAMES:
        assert data.rows(reader[1], "SELECT has_table_privilege(:v, 'SELECT') AS r, "
                                    "has_table_privilege(:v, 'INSERT, UPDATE, DELETE, TRUNCATE') AS w",
                         v=view) == [{"r": True, "w": False}]


@pytest.mark.postgres
def test_reader_transactions_are_read_only_by_default(reader):
    with reader[1].connect() as conn, pytest.raises(exc.InternalError) as e:
        conn.exec_driver_sql("CREATE TEMP TABLE t (x int)")
    assert e.value.orig.pgcode == "25006"  # read_only_sql_transaction


@pytest.mark.postgres
def test_reader_survives_recreated_views_and_rerun(reader, views_pg):
    role, engine = reader
    views.create_views(views_pg)
    views.create_reader_role(views_pg, role=role, password="it's a secret")
    assert data.rows(engine, "SELECT version FROM facehpo_views_version") == [{"version": views.VIEWS_VERSION}]


@pytest.mark.postgres
@pytest.mark.parametrize("grant, message", [
    ("GRANT SELECT ON trials TO PUBLIC", "still has rights on trials"),
    ("GRANT pg_read_all_data TO {role}", "is a member of pg_read_all_data"),
])
def test_reader_role_refused_when_it_could_do_more(reader, views_pg, grant, message):
    role, _ = reader
    with views_pg.connect() as conn:  # the grant and the refusal are rolled back
        conn.exec_driver_sql(grant.format(role=role))
        with pytest.raises(SetupError, match=message):
            views.create_reader_role(conn, role=role)
        conn.rollback()


@pytest.mark.postgres
def test_role_name_is_checked(views_pg):
    with pytest.raises(SetupError, match="role name"):
        views.create_reader_role(views_pg, role="x; DROP TABLE trials")
    with views_pg.connect() as conn:
        assert "trials" in sqlalchemy.inspect(conn).get_table_names()
        assert conn.execute(text("SELECT COUNT(*) FROM trials")).scalar_one() == 31


@pytest.mark.postgres
def test_database_errors_become_one_line(reader):
    role, engine = reader
    with pytest.raises(SetupError, match="checking Optuna.s schema in .* failed: permission denied") as e:
        views.create_views(engine)  # the reader cannot read alembic_version
    with pytest.raises(SetupError, match="creating reader role 'other' in .* failed") as e2:
        views.create_reader_role(engine, role="other")
    assert "\n" not in str(e.value) + str(e2.value)


@pytest.mark.postgres
def test_password_is_stored_verbatim(reader, views_pg):
    role, _ = reader
    password = "it's a \\ %(pw)s :pw; DROP ROLE postgres; --"
    with views_pg.connect() as conn:  # md5 (in this session only) makes the stored form checkable
        conn.exec_driver_sql("SET password_encryption = 'md5'")
        views.create_reader_role(conn, role=role, password=password)
        stored = conn.execute(text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"),
                              {"r": role}).scalar_one()
        conn.rollback()
    assert stored == "md5" + hashlib.md5((password + role).encode()).hexdigest()
