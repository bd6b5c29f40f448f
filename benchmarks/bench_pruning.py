"""Time to quality: a fine study with the median pruner against the same study unpruned.

Two fine-stage studies on the real FDDB crops hold the same enqueued configurations
(T draws from the report's narrowed ranges, lr 1e-5..1e-3 and reg 1e-5..1e-2, the
same per-trial seeds) and the same budget of E epochs per trial. One facehpo worker
drains each: pruner none, then pruner median (a study created with `--pruner median`:
MedianPruner(n_startup_trials=5, n_warmup_steps=1) on the per-epoch validation
accuracy). Budget spent = epochs actually trained (one intermediate value per epoch).

Target: the pruned study reaches the unpruned study's best validation accuracy (within
0.5 points) having spent at most 40 % of the unpruned study's epochs. Both curves,
best validation accuracy of the COMPLETE trials against epochs spent, go to
benchmarks/out/pruning-MODE.png.

    python benchmarks/bench_pruning.py [--quick | --dry-run]
"""
from __future__ import annotations

import sys

import _common as c

TOLERANCE = 0.005  # half a percentage point


def make_fine(storage, name: str, crops, trials: int, epochs: int, seed: int):
    """A fine-stage study as `create_fine` makes it, over the report's narrowed ranges."""
    from study.space import REPORT_FINE
    from study.stages import VERSION, _create, _seeds, draw

    attrs = {"stage": "fine", "model": 1, "epochs": epochs, "n_trials": trials, "batch_size": 20,
             "seed": seed, "space": REPORT_FINE.to_dict(), "parent": "report (by hand)",
             "data_hash": crops.content_hash, "data_source": crops.meta.get("source", "unknown"),
             "facehpo_version": VERSION}
    return _create(storage, name, attrs, draw(REPORT_FINE, trials, seed), _seeds(seed + 1, trials))


def curve(trials) -> list[tuple[int, float]]:
    """(epochs spent so far, best COMPLETE val accuracy so far) after each trial, in order."""
    spent, best, out = 0, float("nan"), []
    for t in sorted(trials, key=lambda t: t.number):
        spent += len(t.intermediate_values)
        if t.state.name == "COMPLETE" and not (t.value <= best):
            best = t.value
        out.append((spent, best))
    return out


def reached(points, goal: float) -> int | None:
    return next((spent for spent, best in points if best >= goal), None)


def plot(curves: dict, budget: int, goal: float, path) -> None:
    plt, fig, ax = c.figure()
    for label, pts in curves.items():
        ax.step([0] + [p[0] for p in pts], [float("nan")] + [p[1] for p in pts], where="post",
                label=label, marker="o", markersize=3)
    ax.axvline(0.4 * budget, color="grey", ls="--", lw=1, label="40 % of the unpruned epochs")
    ax.axhline(goal, color="tab:red", ls=":", lw=1, label="unpruned best - 0.5 points")
    c.save_best_plot(plt, fig, ax, path, "epochs spent", "Median pruner vs no pruning, same configurations")


def main(argv=None) -> int:
    args = c.parser(__doc__).parse_args(argv)
    trials, epochs = {"dry-run": (2, 1), "quick": (12, 6), "full": (20, 10)}[c.mode(args)]
    _, crops = c.load(args, "time to quality with pruning", storage="PostgreSQL (scratch database)",
                      run=f"fine stage, {trials} trials x {epochs} epochs, Model 1, batch 20")
    from study.storage import StorageConfig, open_storage

    curves, walls, studies = {}, {}, {}
    with c.scratch_pg() as url:
        storage = open_storage(StorageConfig(url=url), create=True)
        for pruner in ("none", "median"):
            study = make_fine(storage, f"prune-{pruner}-fine", crops, trials, epochs, seed=0)
            walls[pruner], studies[pruner] = c.drain(storage, crops, study.study_name, pruner=pruner)
        storage.engine.dispose()
    for pruner, ts in studies.items():
        curves[f"pruner {pruner}"] = curve(ts)
        states = {s: sum(t.state.name == s for t in ts) for s in ("COMPLETE", "PRUNED", "FAIL")}
        pts = curves[f"pruner {pruner}"]
        print(f"pruner {pruner:6s}: {pts[-1][0]} epochs, wall {walls[pruner]:.1f} s, {states}, "
              f"best {pts[-1][1]:.4f}; curve (epochs, best) {[(e, round(b, 4)) for e, b in pts]}")
    budget = curves["pruner none"][-1][0]
    goal = curves["pruner none"][-1][1] - TOLERANCE
    at = reached(curves["pruner median"], goal)
    share = at / budget if at is not None else float("inf")
    print(f"goal {goal:.4f} (unpruned best - 0.5 points): unpruned reached it at "
          f"{reached(curves['pruner none'], goal)} epochs, pruned at {at} of the unpruned {budget}")
    out = c.OUT / f"pruning-{c.mode(args)}.png"
    plot(curves, budget, goal, out)
    print(f"plot: {out.relative_to(c.ROOT)}")
    c.verdict("epochs the pruned study needs to reach the goal / unpruned epochs", share, "<= 0.40",
              share <= 0.40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
