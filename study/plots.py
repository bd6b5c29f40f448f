"""Optuna trials and a final run's history -> PNG files people can look at.

Pure matplotlib on the Agg canvas (no pyplot state, no display, no TensorFlow), so
plots can be drawn from any machine that can read the studies.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from optuna.trial import FrozenTrial, TrialState

from dataset.atomic import atomic_write
from study.results import ranked

CLASS_NAMES = ("non-face (0)", "face (1)")
DPI = 110


def search_plot(trials: list[FrozenTrial], path: str | os.PathLike, title: str,
                box: dict | None = None, space: dict | None = None) -> Path:
    """Write `search_figure` as a PNG at `path`."""
    return _save(search_figure(trials, title, box, space), path)


def search_figure(trials: list[FrozenTrial], title: str, box: dict | None = None,
                  space: dict | None = None) -> Figure:
    """lr against reg on log axes, coloured by validation accuracy.

    Failed trials are red crosses, pruned ones grey rings, the best trial a star;
    `box` ({"lr": [lo, hi], "reg": [lo, hi]}) is drawn as a dashed rectangle, e.g.
    the fine study's narrowed ranges on the coarse plot. `space` (same shape, the
    study's own ranges) sets the axis limits, so the plot shows the whole search region.
    """
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot()
    ax.set(xscale="log", yscale="log", xlabel="learning rate (lr)",
           ylabel="L2 regularization (reg)", title=title)
    done = completed(trials)
    if done:
        lr, reg, acc = (np.array(v, dtype=float) for v in zip(
            *((t.params["lr"], t.params["reg"], t.value) for t in done)))
        points = ax.scatter(lr, reg, c=acc, cmap="viridis", s=36, edgecolors="black",
                            linewidths=0.4, label=f"complete ({len(done)})", zorder=3)
        fig.colorbar(points, ax=ax, label="validation accuracy")
        best = done[0]
        ax.scatter([best.params["lr"]], [best.params["reg"]], marker="*", s=260,
                   facecolors="none", edgecolors="red", linewidths=1.2, zorder=4,
                   label=f"best #{best.number}: {best.value:.3f}")
    for state, style in ((TrialState.FAIL, dict(marker="x", c="red", s=40)),
                         (TrialState.PRUNED, dict(marker="o", facecolors="none",
                                                  edgecolors="grey", s=36))):
        xy = [(t.params["lr"], t.params["reg"]) for t in trials
              if t.state == state and {"lr", "reg"} <= t.params.keys()]
        if xy:
            ax.scatter(*zip(*xy), label=f"{state.name.lower()} ({len(xy)})", zorder=3,
                       **style)
    if box:
        (x0, x1), (y0, y1) = box["lr"], box["reg"]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--",
                               edgecolor="crimson", linewidth=1.5, label="fine ranges"))
        ax.update_datalim([(x0, y0), (x1, y1)])
        ax.autoscale_view()
    if space:
        ax.set_xlim(*_padded(space["lr"]))
        ax.set_ylim(*_padded(space["reg"]))
    _log_ticks(ax.xaxis, ax.get_xlim())
    _log_ticks(ax.yaxis, ax.get_ylim())
    if ax.has_data():
        ax.legend(fontsize="small", loc="best")
    else:
        _empty(ax, "no trials with lr and reg yet")
    return fig


def curves_plot(trials: list[FrozenTrial], path: str | os.PathLike, top: int = 5,
                title: str = "learning curves of the top trials") -> Path:
    """Write `curves_figure` as a PNG at `path`."""
    return _save(curves_figure(trials, top, title), path)


def curves_figure(trials: list[FrozenTrial], top: int = 5,
                  title: str = "learning curves of the top trials") -> Figure:
    """Validation accuracy per epoch (intermediate values, step = epoch from 0) of
    the `top` complete trials with the highest validation accuracy."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.set(xlabel="epoch (from 0)", ylabel="validation accuracy", title=title)
    for t in [t for t in completed(trials) if t.intermediate_values][:top]:
        steps = sorted(t.intermediate_values)
        ax.plot(steps, [t.intermediate_values[s] for s in steps], marker=".",
                label=f"#{t.number}: {t.value:.3f} (lr {t.params.get('lr', float('nan')):.1e},"
                      f" reg {t.params.get('reg', float('nan')):.1e})")
    _epoch_axis(ax, [x for line in ax.lines for x in line.get_xdata()])
    if ax.has_data():
        ax.legend(fontsize="small", loc="lower right")
    else:
        _empty(ax, "no complete trial reported per-epoch values yet")
    return fig


def final_plots(history: list[dict], confusion: list[list[int]],
                out_dir: str | os.PathLike, prefix: str = "final") -> list[Path]:
    """The final run's loss curves, accuracy curves and confusion matrix as PNGs.

    `history`: [{"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}];
    `confusion`: [[tn, fp], [fn, tp]], rows = true class (0 non-face, 1 face).
    Returns [PREFIX_loss.png, PREFIX_accuracy.png, PREFIX_confusion.png] in `out_dir`.
    """
    out_dir = Path(out_dir)
    figures = [history_figure(history, "loss"), history_figure(history, "accuracy"),
               confusion_figure(confusion)]
    return [_save(fig, out_dir / f"{prefix}_{what}.png")
            for fig, what in zip(figures, ("loss", "accuracy", "confusion"))]


def history_figure(history: list[dict], metric: str) -> Figure:
    """Train and validation `metric` ("loss" or "accuracy") per epoch of one run."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.set(xlabel="epoch", ylabel=metric, title=f"final run: {metric}")
    epochs = [h["epoch"] for h in history]
    for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker=".", label=label)
    _epoch_axis(ax, epochs)
    if history:
        ax.legend()
    else:
        _empty(ax, "no history recorded")
    return fig


def confusion_figure(confusion: list[list[int]]) -> Figure:
    """Counts and row-normalized fractions side by side (rows true, columns predicted)."""
    counts = np.asarray(confusion, dtype=float)
    if counts.shape != (2, 2):
        raise ValueError(f"confusion must be [[tn, fp], [fn, tp]], got shape {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig = _figure(8.8, 3.8)
    for i, (matrix, title, fmt) in enumerate(((counts, "counts", "{:.0f}"),
                                              (fractions, "row-normalized", "{:.3f}"))):
        ax = fig.add_subplot(1, 2, i + 1)
        image = ax.imshow(matrix, cmap="Blues", vmin=0,
                          vmax=max(matrix.max(), 1e-9) if i == 0 else 1)
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set(title=f"test confusion ({title})", xlabel="predicted", ylabel="true",
               xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES,
               yticklabels=CLASS_NAMES)
        for (r, c), v in np.ndenumerate(matrix):
            dark = v > 0.6 * (matrix.max() if i == 0 else 1)
            ax.text(c, r, fmt.format(v), ha="center", va="center",
                    color="white" if dark else "black", fontsize="large")
    return fig


def completed(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """COMPLETE trials with both parameters, best first by the one ranking rule
    (`study.results.ranked`: the report table, the SQL views and the final stage use it too)."""
    return [t for t in ranked(trials) if {"lr", "reg"} <= t.params.keys()]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _padded(lo_hi, margin: float = 0.05) -> tuple[float, float]:
    """A log range widened by `margin` of its span on each side."""
    lo, hi = np.log10(lo_hi)
    pad = margin * max(hi - lo, 0.1)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def _log_ticks(axis, limits) -> None:
    """Labels at 1, 2, 5 x 10^k on short log ranges, at powers of ten otherwise."""
    decades = np.log10(limits[1]) - np.log10(limits[0])
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 2.5 else (1.0,),
                                      numticks=12))
    axis.set_major_formatter(FuncFormatter(_power_label))
    axis.set_minor_formatter(NullFormatter())


def _power_label(value: float, _pos) -> str:
    exponent = int(np.floor(np.log10(value) + 1e-9))
    mantissa = round(value / 10.0 ** exponent)
    power = f"10^{{{exponent}}}"
    return f"${power}$" if mantissa == 1 else f"${mantissa}\\times{power}$"


def _epoch_axis(ax, epochs) -> None:
    """Whole-number epoch ticks; every epoch labelled when there are few of them."""
    distinct = sorted(set(int(e) for e in epochs))
    if 0 < len(distinct) <= 12:
        ax.set_xticks(distinct)
        if len(distinct) == 1:
            ax.set_xlim(distinct[0] - 1, distinct[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            color="grey")


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (for pages that embed their images)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
