"""Adaptive samplers: best validation accuracy against trials spent, random vs TPE vs GP.

For each seed and sampler, one fine-stage study on the real FDDB crops over the report's
narrowed box (lr 1e-5..1e-3, reg 1e-5..1e-2: study.space.REPORT_FINE, what the report
chose by hand after its coarse search), T trials x E epochs, Model 1, batch 20. TPE and
GP studies run in synchronous rounds (`--sampler tpe|gp --round R`, study/rounds.py),
drawn by facehpo's own worker as each round ends; the random study is one round, as
`facehpo fine` makes it. Every sampler's first round is the same seeded random draw
(rounds.round_seed), so it is trained once per seed and its results reused by the other
samplers' studies (same configuration, same weight seed, same epochs: training is
deterministic on CPU, and the output says how many trials were reused).

Target (the issue's): averaged over the seeds, an adaptive sampler reaches random's
final best (within 0.5 points) with at most half of the trials, or beats it by at least
1 point at the same budget. The mean curves (and each seed's, thin) go to
benchmarks/out/samplers-MODE.png, the table to stdout.

    python benchmarks/bench_samplers.py [--quick | --dry-run] [--seeds N] [--trials T] [--epochs E]

Full (default): 3 seeds x 20 trials x 5 epochs, rounds of 4: ~15 minutes on a quiet
2-core CPU. --quick: 2 seeds x 10 trials x 3 epochs (~3 minutes).
"""
from __future__ import annotations

import sys
import time

import _common as c

SAMPLERS = ("random", "tpe", "gp")
TOLERANCE, MARGIN = 0.005, 0.01  # half a point; one point
SIZES = {"dry-run": (1, 4, 1, 2), "quick": (2, 10, 3, None), "full": (3, 20, 5, 4)}


def make_study(storage, crops, sampler: str, seed: int, trials: int, epochs: int, size):
    """A fine-stage study over REPORT_FINE, drawn by `sampler` in rounds (round 0 enqueued)."""
    from study.rounds import RoundPlan
    from study.space import REPORT_FINE
    from study.stages import VERSION, _create

    attrs = {"stage": "fine", "model": 1, "epochs": epochs, "n_trials": trials, "batch_size": 20,
             "seed": seed, "space": REPORT_FINE.to_dict(), "parent": "report (by hand)",
             "data_hash": crops.content_hash, "data_source": crops.meta.get("source", "unknown"),
             "facehpo_version": VERSION}
    plan = RoundPlan.make(sampler, trials, size, seed, init_seed=seed + 1)
    return _create(storage, f"{sampler}-s{seed}-fine", attrs, [], [], plan)


def shared_objective():
    """facehpo's Objective, remembering what each (lr, reg, weight seed, data seed, epochs) gave:
    the same configuration asked again (every sampler's round 0) replays its result."""
    from study.errors import TrialFailed
    from study.objective import Objective
    from study.space import SearchSpace

    class Shared(Objective):
        cache: dict = {}
        reused = 0

        def __call__(self, trial) -> float:
            d = SearchSpace.from_dict(self.cfg.space).distributions()
            lr = trial.suggest_float("lr", d["lr"].low, d["lr"].high, log=True)
            reg = trial.suggest_float("reg", d["reg"].low, d["reg"].high, log=True)
            key = (lr, reg, int(trial.user_attrs.get("seed", trial.number)), self.cfg.seed,
                   self.cfg.epochs)
            if key not in self.cache:
                try:
                    value = super().__call__(trial)
                except TrialFailed as e:
                    self.cache[key] = (None, str(e), trial.user_attrs)
                    raise
                self.cache[key] = (value, None, trial.user_attrs)
                return value
            Shared.reused += 1
            value, reason, attrs = self.cache[key]
            for k, v in attrs.items():
                if k not in ("draw", "round", "seed"):
                    trial.set_user_attr(k, v)
            for h in attrs.get("history", []):
                trial.report(h["val_accuracy"], h["epoch"])
            if value is None:
                raise TrialFailed(reason)
            return value

    return Shared


def best_curve(trials, n: int) -> list[float]:
    """Best COMPLETE val accuracy after 1..n trials, in draw order (a trial's place in the
    budget; the draw order is also the order rounds ended)."""
    from study.rounds import latest

    best, out = float("nan"), []
    last = latest(trials)
    for d in range(n):
        t = last[d]
        if t.state.name == "COMPLETE" and not (t.value <= best):
            best = t.value
        out.append(best)
    return out


def mean_curve(curves: list[list[float]]) -> list[float]:
    return [sum(x) / len(x) for x in zip(*curves)]


def verdicts(mean: dict[str, list[float]], n: int) -> tuple[bool, list[str]]:
    goal = mean["random"][-1] - TOLERANCE
    met, lines = False, []
    for s in SAMPLERS[1:]:
        at = next((i + 1 for i, b in enumerate(mean[s]) if b >= goal), None)
        gain = mean[s][-1] - mean["random"][-1]
        fast, better = at is not None and at <= n / 2, gain >= MARGIN
        met |= fast or better
        lines.append(f"{s}: reaches random's final best - 0.5 points ({goal:.4f}) after "
                     f"{at if at is not None else 'never'} of {n} trials (target <= {n // 2}: "
                     f"{'yes' if fast else 'no'}); final best {mean[s][-1]:.4f}, "
                     f"{gain * 100:+.2f} points vs random (target >= +1: {'yes' if better else 'no'})")
    return met, lines


def plot(curves: dict, mean: dict, n: int, path) -> None:
    plt, fig, ax = c.figure()
    xs = list(range(1, n + 1))
    for i, s in enumerate(SAMPLERS):
        color = f"C{i}"
        for cv in curves[s]:
            ax.step(xs, cv, where="post", color=color, alpha=0.25, lw=0.8)
        ax.step(xs, mean[s], where="post", color=color, lw=2, marker="o", markersize=3,
                label=f"{s} (mean of {len(curves[s])} seeds)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.axvline(n / 2, color="grey", ls="--", lw=1, label="half the trials")
    ax.axhline(mean["random"][-1] - TOLERANCE, color="tab:red", ls=":", lw=1,
               label="random's final best - 0.5 points")
    c.save_best_plot(plt, fig, ax, path, "trials spent",
                     "Random vs TPE vs GP on the fine stage's box (synchronous rounds)")


def main(argv=None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--seeds", type=int, help="seeds per sampler (full 3)")
    p.add_argument("--trials", type=int, help="trials per study (full 20)")
    p.add_argument("--epochs", type=int, help="epochs per trial (full 5)")
    p.add_argument("--round", type=int, help="round size of the TPE / GP studies (full 4)")
    args = p.parse_args(argv)
    seeds, n, epochs, size = SIZES[c.mode(args)]
    seeds, n, epochs = args.seeds or seeds, args.trials or n, args.epochs or epochs
    size = args.round or size
    from study.rounds import default_round

    size = size or default_round(n, "tpe")
    _, crops = c.load(args, "random vs TPE vs GP", storage="PostgreSQL (scratch database)",
                      run=f"fine stage over REPORT_FINE, {seeds} seed(s) x {n} trials x {epochs} "
                          f"epochs, Model 1, batch 20; TPE / GP in rounds of {size}")
    import optuna

    from model.device import configure
    from study.storage import StorageConfig, open_storage
    from study.worker import WorkerConfig, run_worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device, objective = configure(), shared_objective()
    curves = {s: [] for s in SAMPLERS}
    with c.scratch_pg() as url:
        storage = open_storage(StorageConfig(url=url), create=True)
        for seed in range(seeds):
            for s in SAMPLERS:
                study = make_study(storage, crops, s, seed, n, epochs, size)
                t = time.perf_counter()
                run_worker(storage, crops, WorkerConfig(study=study.study_name, progress=False,
                                                        out_dir=c.OUT / "scratch"),
                           device=device, objective_factory=objective)
                wall = time.perf_counter() - t
                ts = study.get_trials()
                cv = best_curve(ts, n)
                curves[s].append(cv)
                states = {k: sum(t.state.name == k for t in ts) for k in ("COMPLETE", "PRUNED", "FAIL")}
                print(f"seed {seed} {s:6s}: {len(ts)} trials {states}, wall {wall:.1f} s, "
                      f"best {cv[-1]:.4f}; best so far {c.fmt(cv, 4)}", flush=True)
        storage.engine.dispose()
    print(f"trials trained {seeds * len(SAMPLERS) * n - objective.reused}, reused "
          f"{objective.reused} (every sampler's round 0 is the same draw)")
    mean = {s: mean_curve(curves[s]) for s in SAMPLERS}
    marks = sorted({max(1, n // 4), n // 2, (3 * n) // 4, n})
    print("\nmean best validation accuracy after k trials (over seeds):")
    print("sampler " + "".join(f"{'k=' + str(k):>9s}" for k in marks) + "   final per seed")
    for s in SAMPLERS:
        print(f"{s:7s} " + "".join(f"{mean[s][k - 1]:9.4f}" for k in marks)
              + "   " + c.fmt([cv[-1] for cv in curves[s]], 4))
    met, lines = verdicts(mean, n)
    for line in lines:
        print(line)
    out = c.OUT / f"samplers-{c.mode(args)}.png"
    plot(curves, mean, n, out)
    print(f"plot: {out.relative_to(c.ROOT)}")
    best = max(mean[s][-1] - mean["random"][-1] for s in SAMPLERS[1:])
    c.verdict("best adaptive gain over random at the full budget, points (mean of seeds)", best * 100,
              ">= +1, or random's final best within 0.5 points in <= half the trials", met)
    return 0


if __name__ == "__main__":
    sys.exit(main())
