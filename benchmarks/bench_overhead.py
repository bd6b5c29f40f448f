"""Orchestration overhead on PostgreSQL: the share of a trial's wall time that is not
training epochs (storage round trips, model build, data access, reporting, pruning
checks, popping the next trial).

A coarse study of T trials x 5 epochs on the real FDDB crops is drained by one facehpo
worker (`study.worker.run_worker`, the default objective, the median pruner's per-epoch
reports, as a study created with `--pruner median` runs it) in this process. Two shares:

  per trial   1 - sum(history seconds) / (datetime_complete - datetime_start)
  whole loop  1 - sum of every trial's epoch seconds / run_worker's wall time
              (the loop's own pops, stale-trial checks and progress lines included)

An epoch's seconds are what the trainer's recorder measures from on_epoch_begin to
on_epoch_end (training and validation; the first epoch of the worker's first trial includes graph
tracing, later trials reuse the compiled model, model/compiled.py).
It then times the pieces that run once per trial, for the breakdown.

    python benchmarks/bench_overhead.py [--quick | --dry-run]
"""
from __future__ import annotations

import sys
import time

import _common as c


def _pieces(crops) -> dict[str, float]:
    """Median seconds of the per-trial work outside the epochs, timed alone."""
    from dataset.pipeline import normalized
    from model import compiled
    from model.cnn import ModelConfig
    from model.train import epoch_order, reset_pack

    times: dict[str, list[float]] = {"epoch order + gather": [], "kept pack reset": []}
    x, y = normalized(crops, "train")
    steps = -(-len(y) // 20)
    for seed in range(4):
        t = time.perf_counter()
        order = epoch_order(0, seed + 1, len(y))
        x[order], y[order]
        times["epoch order + gather"].append(time.perf_counter() - t)
        t = time.perf_counter()  # the seed's initial weights, L2 factor, dropout seed; Adam zeroed
        reset_pack(compiled.kept_pack(1, 1, 0.25, steps), [(ModelConfig(), seed)])
        times["kept pack reset"].append(time.perf_counter() - t)
    return {k: c.median(v[1:]) for k, v in times.items()}  # the first may build and compile


def main(argv=None) -> int:
    args = c.parser(__doc__).parse_args(argv)
    trials, epochs = {"dry-run": (2, 1), "quick": (3, 5), "full": (6, 5)}[c.mode(args)]
    _, crops = c.load(args, "orchestration overhead", storage="PostgreSQL (scratch database)",
                      run=f"{trials} trials x {epochs} epochs, Model 1, batch 20, pruner median")
    from study.stages import StageConfig, create_coarse
    from study.storage import StorageConfig, open_storage

    with c.scratch_pg() as url:
        storage = open_storage(StorageConfig(url=url), create=True)
        study = create_coarse(storage, StageConfig(name="overhead", trials=trials, epochs=epochs), crops.meta)
        loop_wall, trials_ = c.drain(storage, crops, study.study_name, pruner="median", progress=True)
        storage.engine.dispose()
    done = [t for t in trials_ if t.state.is_finished()]
    shares, epoch_total = [], 0.0
    for tr in done:
        wall = (tr.datetime_complete - tr.datetime_start).total_seconds()
        secs = sum(e["seconds"] for e in tr.user_attrs.get("history", []))
        epoch_total += secs
        shares.append(1 - secs / wall)
        print(f"trial {tr.number} {tr.state.name}: wall {wall:.3f} s, epochs {secs:.3f} s "
              f"({len(tr.user_attrs.get('history', []))}), overhead {wall - secs:.3f} s = "
              f"{100 * (1 - secs / wall):.2f} %")
    whole = 1 - epoch_total / loop_wall
    print(f"whole loop: wall {loop_wall:.3f} s, epochs {epoch_total:.3f} s, overhead "
          f"{loop_wall - epoch_total:.3f} s = {100 * whole:.2f} %")
    for name, secs in _pieces(crops).items():
        print(f"  per-trial piece {name:20s} {secs * 1000:8.1f} ms (median of 3, timed alone)")
    per_trial = c.median(shares)
    c.verdict("overhead share of a trial's wall time (median trial)", per_trial, "< 0.02", per_trial < 0.02)
    c.verdict("overhead share of the whole worker loop", whole, "< 0.02", whole < 0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main())
