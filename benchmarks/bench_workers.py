"""Worker scaling on PostgreSQL with an instant objective: facehpo's worker loop
against plain Optuna, trials per second for 1, 2, 4 and 8 processes.

For each process count P, two studies of N trials each are enqueued up front with the
same configurations (the coarse stage's seeded draws): one is drained by P facehpo
workers (`study.worker.run_worker`: `study.optimize(n_trials=1)` in pop-only mode,
heartbeats, a stale-trial check every half heartbeat interval, progress line), the
other by P plain Optuna processes calling `study.optimize(objective, n_trials=N/P)` on
an `RDBStorage` of the same URL with the same heartbeat settings. The objective only
suggests lr and reg and returns; so what is timed is the loop and the database round
trips. The two systems alternate per P (facehpo first for even P, plain first otherwise).

Throughput = N / (last trial's datetime_complete - the moment all P processes, already
started and connected, are released together). Duplicates: trials beyond N, or a
configuration (user attribute `draw`) finished more than once.

    python benchmarks/bench_workers.py [--quick | --dry-run]
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from pathlib import Path

import _common as c

HEARTBEAT, GRACE = 60, 300  # facehpo's defaults, given to plain Optuna too


def _instant_factory():
    from study.objective import Objective

    class Instant(Objective):
        """facehpo's objective minus the training: suggest the two parameters, return."""

        def __call__(self, trial) -> float:
            lo_hi = self.cfg.space
            lr = trial.suggest_float("lr", *lo_hi["lr"], log=True)
            reg = trial.suggest_float("reg", *lo_hi["reg"], log=True)
            return lr * reg

    return Instant


def _facehpo_child(url, crops_file, study, barrier, out):
    sys.stderr = open(os.devnull, "w")  # the per-trial progress lines the CLI prints
    from dataset.archive import load_crops
    from study.storage import StorageConfig, open_storage
    from study.worker import WorkerConfig, run_worker

    storage = open_storage(StorageConfig(url=url, heartbeat_interval=HEARTBEAT, grace_period=GRACE))
    crops = load_crops(crops_file)
    cfg = WorkerConfig(study=study, poll_seconds=0.5)
    barrier.wait()
    out.put(time.time())
    run_worker(storage, crops, cfg, objective_factory=_instant_factory())


def _plain_child(url, study_name, n_trials, barrier, out):
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT, grace_period=GRACE)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=optuna.samplers.RandomSampler())
    space = study.user_attrs["space"]

    def objective(trial):
        return trial.suggest_float("lr", *space["lr"], log=True) * trial.suggest_float(
            "reg", *space["reg"], log=True)

    barrier.wait()
    out.put(time.time())
    study.optimize(objective, n_trials=n_trials, gc_after_trial=False)


def _run(target, args_for, n_procs: int) -> float:
    """Start n_procs children, release them together; the release time."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n_procs), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), barrier, out)) for i in range(n_procs)]
    for p in procs:
        p.start()
    starts = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=900)
        if p.exitcode != 0:
            raise SystemExit(f"{target.__name__} child exited with {p.exitcode}")
    return min(starts)


def _finish(storage, name: str, start: float, n: int) -> tuple[float, int, int]:
    """(trials/s, duplicates, complete) of one drained study."""
    import optuna

    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    end = max(t.datetime_complete.timestamp() for t in done)
    draws = Counter(t.user_attrs.get("draw") for t in done)
    dupes = max(0, len(trials) - n) + sum(k - 1 for k in draws.values() if k > 1)
    return n / (end - start), dupes, len(done)


def main(argv=None) -> int:
    args = c.parser(__doc__).parse_args(argv)
    counts, n = {"dry-run": ((2,), 4), "quick": ((1, 2, 4, 8), 96),
                 "full": ((1, 2, 4, 8), 400)}[c.mode(args)]
    crops_file = c.synthetic_crops(Path(os.environ.get("TMPDIR", "/tmp")) / "facehpo-bench-40.npz")
    import optuna

    from dataset.archive import read_meta
    from study.stages import StageConfig, create_coarse
    from study.storage import StorageConfig, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    c.header("worker scaling", args, storage="PostgreSQL (scratch database)",
             trials=f"{n} per run, instant objective, process counts {counts}")
    ok = True
    with c.scratch_pg() as url:
        storage = open_storage(StorageConfig(url=url), create=True)
        meta = read_meta(crops_file)
        for p in counts:
            results = {}
            systems = ["facehpo", "plain"] if p % 2 == 0 else ["plain", "facehpo"]
            for system in systems:
                study = create_coarse(storage, StageConfig(name=f"{system}{p}", trials=n, epochs=1), meta)
                if system == "facehpo":
                    start = _run(_facehpo_child, lambda i: (url, str(crops_file), study.study_name), p)
                else:
                    share = [n // p + (i < n % p) for i in range(p)]
                    start = _run(_plain_child, lambda i: (url, study.study_name, share[i]), p)
                results[system] = _finish(storage, study.study_name, start, n)
            (f_tps, f_dup, f_done), (p_tps, p_dup, p_done) = results["facehpo"], results["plain"]
            ratio = f_tps / p_tps
            print(f"{p} process(es): facehpo {f_tps:7.1f} trials/s ({f_done} complete, {f_dup} duplicates); "
                  f"plain Optuna {p_tps:7.1f} trials/s ({p_done} complete, {p_dup} duplicates); "
                  f"ratio {ratio:.3f}", flush=True)
            met = ratio >= 0.9 and f_dup == 0 and f_done == n
            ok &= met
            c.verdict(f"facehpo / plain Optuna throughput, {p} process(es), zero duplicates", ratio,
                      ">= 0.9 and 0 duplicates", met)
        storage.engine.dispose()
    print(f"all process counts: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
