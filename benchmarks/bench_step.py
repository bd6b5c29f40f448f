"""Where a training step's time goes: TensorFlow's profiler over one epoch of a pack of K
(the kept compiled pack of model/train.py, Model 1, batch 20), op time per step summed by
op type over TensorFlow's compute threads, for each K, per trial.

What it is for: packing can only save work that does not grow with K. Convolutions,
dropout, pooling and every other per-element op grow with K; a per-op or per-step cost
does not. The table shows which is which on this machine. The times are thread time
(two threads busy at once count twice), measured under the profiler, which itself costs
time: compare rows with each other, not with bench_pack's wall times.

    python benchmarks/bench_step.py [--dry-run] [--ks 1,4] [--top N]
"""
from __future__ import annotations

import collections
import glob
import sys
import tempfile
from pathlib import Path

import numpy as np

import _common as c

CONV_OPS = ("Conv2D",)  # any op type naming it: forward, both backprops, fused variants


def op_times(logdir: str, steps: int) -> collections.Counter:
    """ms per step by op type from the profile in `logdir`. The XPlane proto is TensorFlow's
    own (tensorflow.tsl, not a public API): this script's dry run fails if it moves."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    out: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                if ":" in name and "::" not in name:  # "op/name:OpType", not the executor's own
                    out[name.rsplit(":", 1)[1]] += ev.duration_ps / 1e9 / steps
    return out


def profile(crops, k: int) -> collections.Counter:
    import tensorflow as tf

    from bench_pack import draw
    from dataset.pipeline import normalized, ordered_batches
    from model import compiled
    from model.train import TrainConfig, train_pack

    members = draw(k)
    train_pack(crops, members, TrainConfig(epochs=1, batch_size=20))  # traces, and leaves the pack kept
    pack = compiled.current()
    n = len(normalized(crops, "train")[1])
    steps = -(-n // 20)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        pack.fit(ordered_batches(crops, "train", np.arange(n), 20), epochs=1, shuffle=False, verbose=0)
        tf.profiler.experimental.stop()
        return op_times(logdir, steps)


def main(argv=None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--ks", help="pack sizes, comma-separated (default 1,4; dry run 1,2)")
    p.add_argument("--top", type=int, default=12, help="op types shown (the rest summed)")
    args = p.parse_args(argv)
    from dataset.archive import load_crops

    ks = [int(k) for k in (args.ks or ("1,2" if args.dry_run else "1,4")).split(",")]
    path = c.crops_path(args)  # --quick is the full size: one epoch per K takes seconds
    crops = load_crops(path)
    c.header("training step by op type", args, data=str(path), run=f"Model 1, batch 20, K in {ks}")
    per_trial = {}
    for k in ks:
        per_trial[k] = {t: v / k for t, v in profile(crops, k).items()}
    first = per_trial[ks[0]]
    order = sorted(first, key=first.get, reverse=True)
    shown = order[:args.top]
    print("ms per step and trial (thread time)  " + "".join(f"{'K=' + str(k):>9s}" for k in ks))

    def row(label, pick):
        print(f"{label[:36]:36s} " + "".join(f"{sum(pick(per_trial[k])):9.2f}" for k in ks))

    for t in shown:
        row(t, lambda d, t=t: [d.get(t, 0.0)])
    row("(other op types)", lambda d: [v for t, v in d.items() if t not in shown])
    row("all ops", lambda d: d.values())
    row("  of which convolutions", lambda d: [v for t, v in d.items() if any(x in t for x in CONV_OPS)])
    for k in ks[1:]:
        total = sum(per_trial[k].values()) / sum(first.values())
        print(f"K = {k}: all ops per trial at {total:.2f}x K = {ks[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
