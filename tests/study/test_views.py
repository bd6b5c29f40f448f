"""The facehpo SQL views on real PostgreSQL and SQLite, checked against Optuna's Python API.

The databases (a fresh PostgreSQL database per session, a SQLite file) come from
tests/study/conftest.py, the studies from views_data.py. Schema checks and the reader
role are in test_views_access.py, the queries of docs/sql.md in test_sql_docs.py.
"""
from __future__ import annotations

import datetime

import optuna
import pytest
import sqlalchemy

from tests.study import views_data as data
from tests.study.views_data import finite, ranked, rows, studies
from study import views

optuna.logging.set_verbosity(optuna.logging.WARNING)


def utc(dt: datetime.datetime | None):
    """Optuna hands out naive local time; the database (and the views) hold naive UTC."""
    return None if dt is None else dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def as_datetime(x):
    return datetime.datetime.fromisoformat(x) if isinstance(x, str) else x  # SQLite: text


def expected_trial(study: optuna.Study, t) -> dict:
    a = t.user_attrs
    start, end = utc(t.datetime_start), utc(t.datetime_complete)
    duration = (end - start).total_seconds() if start and end else None
    return {"study": study.study_name, "stage": study.user_attrs["stage"], "trial": t.number,
            "round": a.get("round"), "state": t.state.name, "val_accuracy": finite(t.value),
            "val_loss": finite(a.get("val_loss")), "lr": t.params.get("lr"),
            "reg": t.params.get("reg"), "epochs": a.get("epochs"), "worker": a.get("worker"),
            "host": a.get("host"), "device": a.get("device"),
            "datetime_start": start, "datetime_complete": end,
            "duration_s": None if duration is None else pytest.approx(duration, abs=2e-3),
            "fail_reason": a.get("fail_reason")}


def test_trials_match_optuna(views_engine):
    for study in studies(views_engine).values():
        got = rows(views_engine, "SELECT * FROM facehpo_trials WHERE study = :s ORDER BY trial",
                   s=study.study_name)
        for r in got:
            r["datetime_start"] = as_datetime(r["datetime_start"])
            r["datetime_complete"] = as_datetime(r["datetime_complete"])
        assert got == [expected_trial(study, t) for t in study.trials]
    states = {r["state"] for r in rows(views_engine, "SELECT state FROM facehpo_trials")}
    assert states == {"COMPLETE", "FAIL", "RUNNING", "WAITING"}


def test_only_facehpo_studies(views_engine):
    got = {r["study"] for r in rows(views_engine, "SELECT study FROM facehpo_lineage")}
    assert got == set(data.names(data.RUN).values()) | {data.names(data.OTHER)["coarse"]}
    for view in views.VIEW_NAMES[1:]:
        assert not rows(views_engine, f"SELECT * FROM {view} WHERE study = 'not-facehpo'")


def test_top_and_best(views_engine):
    for study in studies(views_engine).values():
        order = ranked(study.trials)
        top = rows(views_engine, "SELECT rank, trial FROM facehpo_top WHERE study = :s "
                                 "ORDER BY rank", s=study.study_name)
        assert top == [{"rank": i, "trial": t.number} for i, t in enumerate(order, 1)]
        best = rows(views_engine, "SELECT * FROM facehpo_best WHERE study = :s", s=study.study_name)
        assert [b["trial"] for b in best] == [order[0].number]
    best = "SELECT trial FROM facehpo_best WHERE study = :s"
    # Three fine trials tie at 0.97: the lower val_loss wins, then the lower number.
    assert rows(views_engine, best, s=data.names(data.RUN)["fine"]) == [{"trial": 4}]
    # No tie and no infinite value: Optuna's own best_trial agrees.
    other = data.load(views_engine, data.names(data.OTHER)["coarse"])
    assert rows(views_engine, best, s=other.study_name) == [{"trial": other.best_trial.number}]


def test_lineage(views_engine):
    for stage, study in studies(views_engine).items():
        a = study.user_attrs
        (got,) = rows(views_engine, "SELECT * FROM facehpo_lineage WHERE study = :s",
                      s=study.study_name)
        assert got == {"study": study.study_name, "stage": stage, "parent": a.get("parent"),
                       "k": a.get("k"), "rule": a.get("rule"),
                       "sampler": a.get("sampler", "random"), "round_size": a.get("round_size"),
                       "seed": a.get("seed"), "sampler_seed": a.get("sampler_seed", a.get("seed")),
                       "lr_low": a["space"]["lr"][0], "lr_high": a["space"]["lr"][1],
                       "reg_low": a["space"]["reg"][0], "reg_high": a["space"]["reg"][1]}


def test_final(views_engine):
    final = studies(views_engine)["final"]
    (t,) = final.trials
    a = t.user_attrs
    (tn, fp), (fn, tp) = a["confusion"]
    assert rows(views_engine, "SELECT * FROM facehpo_final") == [{
        "study": final.study_name, "trial": t.number, "state": "COMPLETE",
        "source_study": a["source_study"], "source_trial": a["source_trial"],
        "val_accuracy": t.value, "test_accuracy": a["test_accuracy"],
        "test_loss": a["test_loss"], "tn": tn, "fp": fp, "fn": fn, "tp": tp}]


def test_curves(views_engine):
    for study in studies(views_engine).values():
        got = rows(views_engine, "SELECT trial, epoch, val_accuracy FROM facehpo_curves "
                                 "WHERE study = :s ORDER BY trial, epoch", s=study.study_name)
        assert got == [{"trial": t.number, "epoch": step, "val_accuracy": finite(v)}
                       for t in study.trials for step, v in sorted(t.intermediate_values.items())]
        has_nan = study.user_attrs["stage"] != "final"  # FAIL trials report NaN last
        assert any(r["val_accuracy"] is None for r in got) == has_nan


def test_views_are_versioned_and_replaced(views_engine):
    assert views.installed_version(views_engine) == views.VIEWS_VERSION
    assert rows(views_engine, "SELECT * FROM facehpo_views_version") == [{
        "version": views.VIEWS_VERSION, "optuna_alembic": "v3.2.0.a",
        "optuna_versions": ">=5.0,<6"}]
    before = rows(views_engine, "SELECT * FROM facehpo_top ORDER BY study, rank")
    views.create_views(views_engine)  # idempotent
    assert rows(views_engine, "SELECT * FROM facehpo_top ORDER BY study, rank") == before
    with views_engine.begin() as conn:  # drop inside a transaction that is rolled back
        views.drop_views(conn)
        assert views.installed_version(conn) is None
        conn.rollback()
    assert views.installed_version(views_engine) == views.VIEWS_VERSION


def test_hostile_study_name_is_only_data(views_engine):
    name = data.names(data.RUN)["coarse"]
    assert "DROP TABLE" in name
    (n,) = rows(views_engine, "SELECT COUNT(*) AS n FROM facehpo_trials WHERE study = :s", s=name)
    assert n["n"] == len(studies(views_engine)["coarse"].trials) == 17
    assert "trials" in sqlalchemy.inspect(views_engine).get_table_names()
