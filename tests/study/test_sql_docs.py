"""Every query in docs/sql.md, run verbatim (parameters bound) on real study data and its
answer checked against Optuna's Python API. PostgreSQL runs them all; SQLite the portable ones."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
from optuna.trial import TrialState

from tests.study import views_data as data
from tests.study.views_data import finite, ranked, rows, studies

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
QUERY = re.compile(r"^<!-- query: (\w+)( postgresql)? -->\n```sql\n(.*?)```", re.S | re.M)
DONE = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def documented() -> dict[str, tuple[str, bool]]:
    """{name: (sql, postgresql only)}"""
    text = DOC.read_text()
    found = {m[1]: (m[3], bool(m[2])) for m in QUERY.finditer(text)}
    assert len(found) == len(re.findall("^<!-- query:", text, re.M)), "a query marker without a ```sql block"
    return found


def values(study):
    return [t.value for t in study.trials if t.state == TrialState.COMPLETE and finite(t.value)]


def best_config(s):
    b = ranked(s["fine"].trials)[0]
    return [{"trial": b.number, "lr": b.params["lr"], "reg": b.params["reg"],
             "val_accuracy": b.value, "val_loss": b.user_attrs["val_loss"]}]


def top10(s):
    return [{"rank": i, "trial": t.number, "val_accuracy": t.value,
             "val_loss": finite(t.user_attrs["val_loss"]), "lr": t.params["lr"],
             "reg": t.params["reg"]} for i, t in enumerate(ranked(s["coarse"].trials)[:10], 1)]


def failures(s):
    n = Counter(t.user_attrs["fail_reason"] for t in s["coarse"].trials if t.state == TrialState.FAIL)
    return [{"fail_reason": r, "n": c} for r, c in sorted(n.items(), key=lambda x: (-x[1], x[0]))]


def progress(s):
    n = Counter((st.study_name, t.state.name) for st in s.values() for t in st.trials)
    return [{"study": k[0], "state": k[1], "n": c} for k, c in sorted(n.items())]


def best_curve(s):
    b = ranked(s["fine"].trials)[0]
    return [{"epoch": e, "val_accuracy": v} for e, v in sorted(b.intermediate_values.items())]


def stage_summary(s):
    out = []
    for stage in ("coarse", "fine"):
        v = values(s[stage])
        out.append({"stage": stage, "n": len(v), "min_acc": min(v),
                    "mean_acc": pytest.approx(mean(v), rel=1e-12), "max_acc": max(v),
                    "n_ge_80": sum(x >= 0.8 for x in v), "n_ge_90": sum(x >= 0.9 for x in v)})
    return out


def stage_percentiles(s):
    out = []
    for stage in ("coarse", "fine"):
        p = np.percentile(values(s[stage]), [25, 50, 75, 90])  # linear, like percentile_cont
        out.append({"stage": stage, **{f"p{q}": pytest.approx(float(x), rel=1e-12)
                                       for q, x in zip((25, 50, 75, 90), p)}})
    return out


def lineage(s):
    return [{"study": st.study_name, "stage": stage, "parent": st.user_attrs.get("parent"),
             "k": st.user_attrs.get("k"), "rule": st.user_attrs.get("rule"),
             "sampler": st.user_attrs.get("sampler", "random"),
             "round_size": st.user_attrs.get("round_size"), "seed": st.user_attrs.get("seed"),
             "sampler_seed": st.user_attrs.get("sampler_seed", st.user_attrs.get("seed")),
             **{f"{p}_{end}": st.user_attrs["space"][p][i]
                for p in ("lr", "reg") for i, end in enumerate(("low", "high"))}}
            for stage, st in s.items()]


def by_round(s):
    out = {}
    for t in s["fine"].trials:
        r = out.setdefault(t.user_attrs["round"], {"trials": 0, "ended": 0, "best_acc": None})
        r["trials"] += 1
        r["ended"] += t.state in DONE
        if t.state == TrialState.COMPLETE and finite(t.value) is not None:
            r["best_acc"] = max(r["best_acc"] or t.value, t.value)
    return [{"round": k, **v} for k, v in sorted(out.items())]


def workers(s):
    by = {}
    for t in s["coarse"].trials:
        if t.state in DONE:
            a = t.user_attrs
            by.setdefault((a["worker"], a["host"], a["device"]), []).append(
                (t.datetime_complete - t.datetime_start).total_seconds())
    return [{"worker": w, "host": h, "device": d, "trials": len(x),
             "mean_s": pytest.approx(mean(x), abs=2e-3)} for (w, h, d), x in sorted(by.items())]


def final_result(s):
    (t,) = s["final"].trials
    a = t.user_attrs
    (tn, fp), (fn, tp) = a["confusion"]
    return [{"source_study": a["source_study"], "source_trial": a["source_trial"],
             "lr": t.params["lr"], "reg": t.params["reg"], "val_accuracy": t.value,
             "test_accuracy": a["test_accuracy"], "test_loss": a["test_loss"],
             "tn": tn, "fp": fp, "fn": fn, "tp": tp,
             "face_precision": pytest.approx(tp / (tp + fp)),
             "face_recall": pytest.approx(tp / (tp + fn))}]


# name -> (the study bound to :study, the expected answer from Optuna's API)
CHECKS = {"best_config": ("fine", best_config), "top10": ("coarse", top10),
          "failures": ("coarse", failures), "progress": (None, progress),
          "best_curve": ("fine", best_curve), "stage_summary": (None, stage_summary),
          "stage_percentiles": (None, stage_percentiles), "lineage": (None, lineage),
          "workers": ("coarse", workers), "rounds": ("fine", by_round), "final_result": ("final", final_result)}


def test_every_documented_query_is_checked():
    assert set(documented()) == set(CHECKS)


def test_data_exercises_the_queries(views_sqlite):
    s = studies(views_sqlite)
    assert len(ranked(s["coarse"].trials)) > 10 and len(failures(s)) == 2
    assert 0 < stage_summary(s)[0]["n_ge_80"] < stage_summary(s)[0]["n"]


@pytest.mark.parametrize("name", sorted(CHECKS))
@pytest.mark.parametrize("backend", [pytest.param("views_pg", marks=pytest.mark.postgres),
                                     "views_sqlite"])
def test_documented_query(name, backend, request):
    sql, postgres_only = documented()[name]
    if postgres_only and backend == "views_sqlite":
        pytest.skip(f"{name} is documented as PostgreSQL-only")
    engine = request.getfixturevalue(backend)
    stage, expected = CHECKS[name]
    params = dict(data.names(data.RUN))
    if stage:
        params["study"] = params[stage]
    s = studies(engine)
    assert rows(engine, sql, **params) == expected(s)
