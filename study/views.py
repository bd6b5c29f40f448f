"""Study results as SQL: facehpo's views over Optuna's tables, and a read-only role.

The views are in study/sql/views.sql, written once for PostgreSQL and SQLite; three
macros (JSON_TEXT, JSON_NUM, SECONDS_BETWEEN) are expanded here per dialect. Every
function takes an existing SQLAlchemy Engine or Connection: study/storage.py opens it.
No Optuna import: the schema facts the views rely on are pinned below and checked
against the database by `check_schema`.
"""
from __future__ import annotations

import contextlib
import re
from importlib import metadata
from pathlib import Path

import sqlalchemy
from sqlalchemy import text

from study.errors import SetupError

VIEWS_VERSION = 3              # bump when a view's columns or meaning change
ALEMBIC_HEAD = "v3.2.0.a"      # Optuna's RDB schema, unchanged from 3.2 to 5.x
SCHEMA_VERSION = 12            # version_info.schema_version of that head
OPTUNA_RANGE = (5, 6)          # >=5.0,<6: 5.0 made trials' datetimes naive UTC
OPTUNA_RANGE_TEXT = f">={OPTUNA_RANGE[0]}.0,<{OPTUNA_RANGE[1]}"

# The columns the views read, per Optuna table (extra columns are fine).
REQUIRED_COLUMNS = {
    "studies": {"study_id", "study_name"},
    "study_user_attributes": {"study_id", "key", "value_json"},
    "trials": {"trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"},
    "trial_values": {"trial_id", "objective", "value", "value_type"},
    "trial_params": {"trial_id", "param_name", "param_value"},
    "trial_user_attributes": {"trial_id", "key", "value_json"},
    "trial_intermediate_values": {"trial_id", "step", "intermediate_value",
                                  "intermediate_value_type"},
    "version_info": {"schema_version", "library_version"},
    "alembic_version": {"version_num"},
}

_MACROS = {
    "postgresql": {
        "JSON_TEXT": "(CASE WHEN left({0}, 1) = '\"' THEN ({0})::json #>> '{{}}' END)",
        # NaN / Infinity are what json.dumps writes for non-finite floats: not JSON.
        "JSON_NUM": "(CASE WHEN {0} LIKE '%NaN%' OR {0} LIKE '%Infinity%' THEN NULL "
                    "WHEN jsonb_typeof(jsonb_path_query_first(({0})::jsonb, {1})) = 'number' "
                    "THEN CAST(jsonb_path_query_first(({0})::jsonb, {1}) #>> '{{}}' "
                    "AS DOUBLE PRECISION) END)",
        "SECONDS_BETWEEN": "CAST(EXTRACT(EPOCH FROM ({1}) - ({0})) AS DOUBLE PRECISION)",
    },
    "sqlite": {
        "JSON_TEXT": "(CASE WHEN substr({0}, 1, 1) = '\"' AND json_valid({0}) "
                     "THEN json_extract({0}, '$') END)",
        "JSON_NUM": "(CASE WHEN json_valid({0}) THEN CASE WHEN json_type({0}, {1}) "
                    "IN ('integer', 'real') THEN CAST(json_extract({0}, {1}) AS REAL) END END)",
        "SECONDS_BETWEEN": "((julianday({1}) - julianday({0})) * 86400.0)",
    },
}
_MACRO_CALL = re.compile(r"\b(JSON_TEXT|JSON_NUM|SECONDS_BETWEEN)\(([^()]*)\)")
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"


class SchemaMismatch(SetupError):
    """Optuna's tables are not the ones the views were written for."""


def view_statements(dialect: str) -> list[tuple[str, str]]:
    """[(view name, CREATE VIEW statement)] in dependency order, for 'postgresql' or 'sqlite'."""
    if dialect not in _MACROS:
        raise SetupError(f"the facehpo views support PostgreSQL and SQLite, not {dialect}")
    macros = _MACROS[dialect]
    sql = (Path(__file__).parent / "sql" / "views.sql").read_text()
    sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    for key, value in {"@VIEWS_VERSION@": str(VIEWS_VERSION), "@ALEMBIC_HEAD@": ALEMBIC_HEAD,
                       "@OPTUNA_RANGE@": OPTUNA_RANGE_TEXT}.items():
        sql = sql.replace(key, value)
    sql = _MACRO_CALL.sub(lambda m: macros[m[1]].format(*m[2].split(", ")), sql)
    statements = [s.strip() for s in re.split(r";\s*$", sql, flags=re.M) if s.strip()]
    return [(re.match(r"CREATE VIEW (\w+) AS", s)[1], s) for s in statements]


VIEW_NAMES = tuple(name for name, _ in view_statements("sqlite"))


@contextlib.contextmanager
def _transaction(bind, action: str):
    """A connection inside a transaction: the caller's, or a new one committed on exit.
    A database error becomes one SetupError line naming `action` and the database."""
    try:
        if isinstance(bind, sqlalchemy.engine.Connection):
            if bind.in_transaction():
                _sqlite_begin(bind)
                yield bind
            else:
                with bind.begin():
                    _sqlite_begin(bind)
                    yield bind
        else:
            with bind.begin() as conn:
                _sqlite_begin(conn)
                yield conn
    except (sqlalchemy.exc.DBAPIError, bind.dialect.loaded_dbapi.Error) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        url = bind.engine.url.render_as_string(hide_password=True)
        raise SetupError(f"{action} in {url} failed: {reason}") from e


def _sqlite_begin(conn) -> None:
    """pysqlite opens a transaction only before INSERT/UPDATE/DELETE; open one now so that
    DROP / CREATE VIEW roll back together (SQLite's DDL is transactional)."""
    raw = conn.connection.dbapi_connection
    if (conn.dialect.name == "sqlite" and getattr(raw, "isolation_level", None) is not None
            and not raw.in_transaction):
        conn.exec_driver_sql("BEGIN")


def check_schema(bind) -> None:
    """Raise SchemaMismatch (one line) unless the database holds the Optuna schema the
    views were written for and the installed optuna is in OPTUNA_RANGE."""
    installed = metadata.version("optuna")
    major = int(installed.split(".")[0])
    if not OPTUNA_RANGE[0] <= major < OPTUNA_RANGE[1]:
        raise SchemaMismatch(f"optuna {installed} is installed; the facehpo views were written "
                             f"for optuna {OPTUNA_RANGE_TEXT}")
    with _transaction(bind, "checking Optuna's schema") as conn:
        inspector = sqlalchemy.inspect(conn)
        tables = set(inspector.get_table_names())
        if not tables & set(REQUIRED_COLUMNS):
            raise SchemaMismatch("no Optuna tables in this database: create the studies first "
                                 "(facehpo init)")
        for table, needed in REQUIRED_COLUMNS.items():
            if table not in tables:
                raise SchemaMismatch(f"Optuna table {table} is missing; the facehpo views were "
                                     f"written for alembic head {ALEMBIC_HEAD}")
            missing = needed - {c["name"] for c in inspector.get_columns(table)}
            if missing:
                raise SchemaMismatch(f"Optuna table {table} lacks column(s) "
                                     f"{', '.join(sorted(missing))}; the facehpo views were "
                                     f"written for alembic head {ALEMBIC_HEAD}")
        heads = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
        if heads != [ALEMBIC_HEAD]:
            raise SchemaMismatch(f"Optuna's alembic head is {', '.join(heads) or 'empty'}; the "
                                 f"facehpo views were written for {ALEMBIC_HEAD} "
                                 f"(optuna {OPTUNA_RANGE_TEXT})")
        versions = [r[0] for r in conn.execute(text("SELECT schema_version FROM version_info"))]
        if versions != [SCHEMA_VERSION]:
            raise SchemaMismatch(f"Optuna's version_info.schema_version is "
                                 f"{versions or 'missing'}; the facehpo views were written "
                                 f"for {SCHEMA_VERSION}")


def installed_version(bind) -> int | None:
    """VIEWS_VERSION of the views in the database, or None if there are none."""
    with _transaction(bind, "reading the views' version") as conn:
        if "facehpo_views_version" not in sqlalchemy.inspect(conn).get_view_names():
            return None
        return conn.execute(text("SELECT version FROM facehpo_views_version")).scalar_one()


def create_views(bind) -> None:
    """Check the schema, then (re)create every facehpo view in one transaction. Roles
    that could read the old views (create_reader_role) are granted the new ones."""
    check_schema(bind)
    with _transaction(bind, "creating the facehpo views") as conn:
        statements = view_statements(conn.dialect.name)
        readers = _view_readers(conn)
        _drop(conn)
        for _, statement in statements:
            conn.execute(text(statement))
        for role in readers:
            _grant_views(conn, role)


def drop_views(bind) -> None:
    """Drop every facehpo view (Optuna's tables are untouched)."""
    with _transaction(bind, "dropping the facehpo views") as conn:
        _drop(conn)


def _drop(conn) -> None:
    for name in reversed(VIEW_NAMES):
        conn.execute(text(f"DROP VIEW IF EXISTS {name}"))


def _view_readers(conn) -> list[str]:
    """Roles other than the owner holding SELECT on facehpo_trials (PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        return []
    return list(conn.execute(text(
        "SELECT DISTINCT r.rolname FROM pg_class c "
        "CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE c.oid = to_regclass('facehpo_trials') AND a.privilege_type = 'SELECT' "
        "AND a.grantee <> c.relowner")).scalars())


def _grant_views(conn, role: str) -> None:
    quoted = conn.dialect.identifier_preparer.quote(role)
    conn.execute(text(f"GRANT SELECT ON {', '.join(VIEW_NAMES)} TO {quoted}"))


def create_reader_role(bind, role: str = "facehpo_reader", password: str | None = None) -> None:
    """PostgreSQL: a LOGIN role that can SELECT the facehpo views and nothing else.

    Idempotent. The views run with their owner's rights, so the role needs no right on
    Optuna's tables; every right it may hold on them is revoked, and the result is
    verified with has_table_privilege before the transaction commits.
    """
    with _transaction(bind, f"creating reader role {role!r}") as conn:
        if conn.dialect.name != "postgresql":
            raise SetupError(f"database roles exist only on PostgreSQL, not {conn.dialect.name}: "
                             "a SQLite file is read by whoever can read the file")
        if not _ROLE_NAME.fullmatch(role):
            raise SetupError(f"role name {role!r}: use lower-case letters, digits and _ "
                             "(at most 63, not starting with a digit)")
        if installed_version(conn) is None:
            raise SetupError("the facehpo views are missing: run `facehpo db views` first")
        quote = conn.dialect.identifier_preparer.quote
        q = quote(role)
        schema = quote(conn.execute(text("SELECT current_schema()")).scalar_one())
        database = quote(conn.execute(text("SELECT current_database()")).scalar_one())
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
        if exists.first() is None:
            conn.execute(text(f"CREATE ROLE {q} LOGIN NOINHERIT"))
        else:
            conn.execute(text(f"ALTER ROLE {q} LOGIN NOINHERIT"))
        if password is not None:  # ALTER ROLE takes no bound parameter: a checked literal,
            cursor = conn.connection.cursor()  # sent without the driver's % interpolation
            cursor.execute(f"ALTER ROLE {q} PASSWORD {_literal(conn, password)}")
            cursor.close()
        conn.execute(text(f"ALTER ROLE {q} SET default_transaction_read_only = on"))
        for statement in (f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {q}",
                          f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {q}",
                          f"REVOKE CREATE ON SCHEMA {schema} FROM {q}",
                          f"GRANT USAGE ON SCHEMA {schema} TO {q}",
                          f"GRANT CONNECT ON DATABASE {database} TO {q}"):
            conn.execute(text(statement))
        if _can(conn, "has_schema_privilege(:r, current_schema(), 'CREATE')", role):
            # Granted to PUBLIC (the default before PostgreSQL 15): take it from PUBLIC,
            # keeping it for the user running this.
            conn.execute(text(f"GRANT CREATE ON SCHEMA {schema} TO CURRENT_USER"))
            conn.execute(text(f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC"))
        _grant_views(conn, role)
        _verify_reader(conn, role)


def _literal(conn, value: str) -> str:
    """A PostgreSQL string literal; with standard_conforming_strings only ' is special."""
    standard = conn.execute(text("SHOW standard_conforming_strings")).scalar_one() == "on"
    if not standard or "\0" in value:
        raise SetupError("cannot quote the password safely (standard_conforming_strings is "
                         "off, or the password holds a NUL character)")
    return "'" + value.replace("'", "''") + "'"


def _can(conn, expression: str, role: str, **params) -> bool:
    return bool(conn.execute(text(f"SELECT {expression}"), {"r": role, **params}).scalar_one())


_RELATIONS = ("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
              "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ")


def _verify_reader(conn, role: str) -> None:
    """Raise SetupError (rolling the role back) if `role` can do more than read the views."""
    if _can(conn, "(SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = :r)", role):
        raise SetupError(f"role {role} is a superuser: it could read and write everything")
    member_of = conn.execute(text(
        "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
        "JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = :r"), {"r": role}).scalars().all()
    if member_of:
        raise SetupError(f"role {role} is a member of {', '.join(member_of)} and could SET ROLE "
                         "to it; use another role name or REVOKE the membership")

    def first(condition: str) -> str | None:
        query = text(_RELATIONS + condition).bindparams(
            sqlalchemy.bindparam("views", expanding=True))
        return conn.execute(query, {"r": role, "views": list(VIEW_NAMES)}).scalars().first()

    other = first(f"c.relname NOT IN :views AND has_table_privilege(:r, c.oid, "
                  f"'SELECT, {_WRITE_PRIVILEGES}')")
    if other:
        raise SetupError(f"role {role} still has rights on {other}, probably through PUBLIC: "
                         f"REVOKE ALL ON {other} FROM PUBLIC")
    written = first(f"c.relname IN :views AND has_table_privilege(:r, c.oid, '{_WRITE_PRIVILEGES}')")
    if written:
        raise SetupError(f"role {role} can write to view {written}, probably through PUBLIC: "
                         f"REVOKE ALL ON {written} FROM PUBLIC")
    unread = first("c.relname IN :views AND NOT has_table_privilege(:r, c.oid, 'SELECT')")
    if unread:
        raise SetupError(f"role {role} cannot SELECT view {unread}")
    if _can(conn, "has_schema_privilege(:r, current_schema(), 'CREATE')", role):
        raise SetupError(f"role {role} can still create tables in the current schema")
