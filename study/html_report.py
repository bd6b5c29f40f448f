"""The coarse, fine and final studies of one run -> one self-contained HTML page.

Images are embedded as base64 PNG data URIs, so the page can be mailed, archived or
opened from a CI artifact without the folder it was written in. Takes Optuna Study
objects (any may be missing), so it does not care how the storage was opened.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import socket
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import optuna
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from dataset.atomic import atomic_write
from study import plots

STAGES = ("coarse", "fine", "final")
TOP = 10
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
img { max-width: 100%; margin: 0.5em 0; display: block; }
.missing { color: #a00; font-style: italic; } .meta { color: #666; }
.row { display: flex; flex-wrap: wrap; gap: 1em; } .row img { max-width: 48%; }
"""


def load_run(storage, name: str) -> dict[str, Study | None]:
    """{stage: Study or None} for NAME-coarse / NAME-fine / NAME-final in `storage`
    (an Optuna storage object or URL, opened by the caller)."""
    present = set(optuna.get_all_study_names(storage))
    return {stage: optuna.load_study(study_name=f"{name}-{stage}", storage=storage)
            if f"{name}-{stage}" in present else None for stage in STAGES}


def write_html(storage_or_studies, name: str, out_dir: str | os.PathLike) -> Path:
    """Write OUT_DIR/NAME.html and return its path.

    `storage_or_studies`: an opened Optuna storage (or URL) holding the run's studies,
    or the mapping `load_run` returns ({"coarse", "fine", "final"} -> Study or None).
    """
    studies = (storage_or_studies if isinstance(storage_or_studies, Mapping)
               else load_run(storage_or_studies, name))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.html"
    page = render(studies, name)
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return path


def render(studies: Mapping[str, Study | None], name: str) -> str:
    """The page as one HTML string."""
    coarse, fine, final = (studies.get(s) for s in STAGES)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>facehpo run <code>{_e(name)}</code></h1>",
            f'<p class="meta">written {now} on {_e(socket.gethostname())}'
            f"{_data_line(coarse or fine or final)}</p>",
            _search_section("Coarse search", coarse, f"{name}-coarse",
                            box=fine.user_attrs.get("space") if fine else None),
            _search_section("Fine search", fine, f"{name}-fine", derived=True),
            _final_section(final, f"{name}-final")]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>facehpo {_e(name)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _search_section(title: str, study: Study | None, study_name: str,
                    box: dict | None = None, derived: bool = False) -> str:
    head = f"<h2>{title} <code>{_e(study_name)}</code></h2>"
    if study is None:
        return head + '<p class="missing">not run yet</p>'
    trials = study.get_trials(deepcopy=False)
    attrs = study.user_attrs
    parts = [head, _kv_table({k: attrs.get(k) for k in ("model", "epochs", "n_trials",
                                                         "batch_size", "seed")}),
             f"<p>trials: {_e(_state_counts(trials))}</p>"]
    if derived:
        parts.append("<h3>Derived ranges</h3>" + _kv_table(
            {"parent": attrs.get("parent"), "top-k": attrs.get("k"),
             "rule": attrs.get("rule"), "lr range": _range(attrs.get("space"), "lr"),
             "reg range": _range(attrs.get("space"), "reg")}))
    else:
        parts.append(_kv_table({"lr range": _range(attrs.get("space"), "lr"),
                                "reg range": _range(attrs.get("space"), "reg")}))
    caption = " (dashed: the fine study's ranges)" if box else ""
    parts += [_img(plots.search_figure(trials, f"{study_name}: lr vs reg", box=box,
                                       space=attrs.get("space")),
                   f"{study_name} search plot{caption}"),
              _img(plots.curves_figure(trials, top=5, title=f"{study_name}: top 5 trials"),
                   f"{study_name} learning curves"),
              f"<h3>Top {TOP} trials</h3>", _top_table(trials), _failures(trials)]
    return "\n".join(parts)


def _final_section(study: Study | None, study_name: str) -> str:
    head = f"<h2>Final run <code>{_e(study_name)}</code></h2>"
    if study is None:
        return head + '<p class="missing">not run yet</p>'
    trials = study.get_trials(deepcopy=False)
    done = plots.completed(trials)
    if not done:
        return "\n".join([head, f"<p>trials: {_e(_state_counts(trials))}</p>",
                          '<p class="missing">no complete final trial yet</p>',
                          _failures(trials)])
    t = done[0]  # highest validation accuracy; test accuracy never selects
    a, s = t.user_attrs, study.user_attrs
    parts = [head, _kv_table({
        "source": f"{a.get('source_study', s.get('parent'))} trial "
                  f"#{a.get('source_trial', s.get('source_trial'))}",
        "lr": _sci(t.params["lr"]), "reg": _sci(t.params["reg"]),
        "epochs": a.get("epochs", s.get("epochs")),
        "validation accuracy": _acc(t.value),
        "test accuracy": _acc(a.get("test_accuracy")),
        "test loss": _num(a.get("test_loss"))})]
    confusion = a.get("confusion")
    if confusion:
        (tn, fp), (fn, tp) = confusion
        parts.append("<table><tr><th>true \\ predicted</th><th>non-face (0)</th>"
                     f"<th>face (1)</th></tr><tr><th>non-face (0)</th><td>{tn}</td>"
                     f"<td>{fp}</td></tr><tr><th>face (1)</th><td>{fn}</td><td>{tp}</td>"
                     "</tr></table>")
    history = a.get("history") or []
    parts.append('<div class="row">' + "".join(
        _img(plots.history_figure(history, m), f"final run {m} per epoch")
        for m in ("loss", "accuracy")) + "</div>")
    if confusion:
        parts.append(_img(plots.confusion_figure(confusion), "test confusion matrix"))
    else:
        parts.append('<p class="missing">no test confusion matrix recorded</p>')
    return "\n".join(parts)


def _top_table(trials: list[FrozenTrial]) -> str:
    done = plots.completed(trials)[:TOP]
    if not done:
        return '<p class="missing">no complete trials yet</p>'
    rows = "".join(f"<tr><td>{i}</td><td>{_acc(t.value)}</td><td>{_sci(t.params['lr'])}</td>"
                   f"<td>{_sci(t.params['reg'])}</td><td>{t.number}</td></tr>"
                   for i, t in enumerate(done, 1))
    return ('<table class="top"><tr><th>rank</th><th>val accuracy</th><th>lr</th>'
            f"<th>reg</th><th>trial</th></tr>{rows}</table>")


def _failures(trials: list[FrozenTrial]) -> str:
    reasons = Counter(t.user_attrs.get("fail_reason", "no reason recorded")
                      for t in trials if t.state == TrialState.FAIL)
    if not reasons:
        return ""
    items = "".join(f"<li>{n} &times; {_e(r)}</li>" for r, n in reasons.most_common())
    return f"<h3>Failed trials</h3><ul>{items}</ul>"


def _state_counts(trials: list[FrozenTrial]) -> str:
    counts = Counter(t.state.name for t in trials)
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"


def _kv_table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td class=\"text\">{_e(_text(v))}</td></tr>"
                    for k, v in rows.items())
    return f"<table>{cells}</table>"


def _img(fig, alt: str) -> str:
    data = base64.b64encode(plots.to_png(fig)).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _data_line(study: Study | None) -> str:
    if study is None:
        return ""
    a = study.user_attrs
    return (f"; data {_e(_text(a.get('data_source')))} {_e(_text(a.get('data_hash')))},"
            f" model {_e(_text(a.get('model')))}, facehpo {_e(_text(a.get('facehpo_version')))}")


def _range(space: dict | None, key: str) -> str | None:
    if not space or key not in space:
        return None
    lo, hi = space[key]
    return f"{_sci(lo)} .. {_sci(hi)}"


def _text(v) -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else json.dumps(v)


def _sci(v: float) -> str:
    return f"{v:.2e}"


def _acc(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _num(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _e(s) -> str:
    return html.escape(str(s))
