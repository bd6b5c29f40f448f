"""study/plots.py on real Optuna trials: the drawn data must be the trials' data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.patches import Rectangle
from optuna.trial import TrialState
from PIL import Image

from study import plots
from tests.study.report_studies import CONFUSION, FINE, build_run, history

ROOT = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def run():
    return build_run(None)


def _scatter(ax, prefix: str):
    found = [c for c in ax.collections if str(c.get_label()).startswith(prefix)]
    assert len(found) == 1, [c.get_label() for c in ax.collections]
    return found[0]


def test_search_figure_draws_every_trial_where_it_belongs(run):
    trials = run["coarse"].trials
    fig = plots.search_figure(trials, "coarse", box=FINE)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and done  # the fixture has both kinds

    points = _scatter(ax, f"complete ({len(done)})")
    want = {(t.params["lr"], t.params["reg"]): t.value for t in done}
    got = {tuple(xy): v for xy, v in zip(points.get_offsets().tolist(), points.get_array())}
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k]) for k in want)
    assert points.get_clim() == pytest.approx((min(want.values()), max(want.values())))

    crosses = _scatter(ax, f"fail ({len(failed)})")
    assert sorted(map(tuple, crosses.get_offsets().tolist())) == sorted(
        (t.params["lr"], t.params["reg"]) for t in failed)

    best = max(done, key=lambda t: t.value)
    star = _scatter(ax, f"best #{best.number}")
    assert star.get_offsets().tolist() == [[best.params["lr"], best.params["reg"]]]

    (rect,) = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_label() == "fine ranges"]
    assert rect.get_xy() == pytest.approx((FINE["lr"][0], FINE["reg"][0]))
    assert rect.get_x() + rect.get_width() == pytest.approx(FINE["lr"][1])
    assert rect.get_y() + rect.get_height() == pytest.approx(FINE["reg"][1])
    assert len(fig.axes) == 2  # plot + colorbar


def test_search_figure_without_box_or_trials(run):
    ax = plots.search_figure(run["fine"].trials, "fine", space=FINE).axes[0]
    assert not [p for p in ax.patches if p.get_label() == "fine ranges"]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()  # the space, a little padded
    assert x0 < FINE["lr"][0] < 1.2 * x0 and x1 / 1.2 < FINE["lr"][1] < x1
    assert y0 < FINE["reg"][0] < 1.3 * y0 and y1 / 1.3 < FINE["reg"][1] < y1
    empty = plots.search_figure([], "nothing yet").axes[0]
    assert not empty.collections
    assert "no trials" in " ".join(t.get_text() for t in empty.texts)


def test_curves_figure_shows_the_top_trials_epoch_by_epoch(run):
    trials = run["coarse"].trials + run["fine"].trials
    ax = plots.curves_figure(trials, top=3).axes[0]
    top = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                 key=lambda t: -t.value)[:3]
    assert len(ax.lines) == 3
    for line, t in zip(ax.lines, top):
        assert line.get_label().startswith(f"#{t.number}:")
        assert list(line.get_xdata()) == sorted(t.intermediate_values)  # epochs from 0
        assert list(line.get_ydata()) == pytest.approx(
            [t.intermediate_values[s] for s in sorted(t.intermediate_values)])


def test_history_and_confusion_figures_hold_the_run_figures():
    h = history(0.9, epochs=5)
    for metric in ("loss", "accuracy"):
        ax = plots.history_figure(h, metric).axes[0]
        assert list(ax.get_xticks()) == [r["epoch"] for r in h]  # whole epochs, each labelled
        train, val = ax.lines
        assert list(train.get_xdata()) == [r["epoch"] for r in h]
        assert list(train.get_ydata()) == pytest.approx([r[metric] for r in h])
        assert list(val.get_ydata()) == pytest.approx([r[f"val_{metric}"] for r in h])

    counts_ax, _, frac_ax, _ = plots.confusion_figure(CONFUSION).axes
    (tn, fp), (fn, tp) = CONFUSION
    assert [t.get_text() for t in counts_ax.texts] == [str(v) for v in (tn, fp, fn, tp)]
    fractions = [tn / (tn + fp), fp / (tn + fp), fn / (fn + tp), tp / (fn + tp)]
    assert [float(t.get_text()) for t in frac_ax.texts] == pytest.approx(fractions, abs=6e-4)
    assert [t.get_text() for t in counts_ax.get_yticklabels()] == list(plots.CLASS_NAMES)
    with pytest.raises(ValueError, match="tn, fp"):
        plots.confusion_figure([[1, 2, 3]])


def test_files_are_real_pngs(run, tmp_path):
    paths = [plots.search_plot(run["coarse"].trials, tmp_path / "coarse.png", "coarse",
                               box=FINE),
             plots.curves_plot(run["fine"].trials, tmp_path / "sub" / "curves.png")]
    final = run["final"].trials[0]
    paths += plots.final_plots(final.user_attrs["history"], final.user_attrs["confusion"],
                               tmp_path / "final")
    assert [p.name for p in paths[2:]] == ["final_loss.png", "final_accuracy.png",
                                           "final_confusion.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 400 and im.height > 300
            pixels = np.asarray(im.convert("L"))
        assert pixels.std() > 10, f"{p.name} looks blank"
    assert plots.to_png(plots.confusion_figure(CONFUSION))[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_do_not_need_tensorflow():
    code = ("import sys, study.plots, study.html_report; "
            "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
