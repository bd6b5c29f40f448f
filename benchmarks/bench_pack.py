"""Trial packing: trials per hour with K trials trained as one model, K = 1, 2, 4, 8, 16
(up to 128 on a GPU), against today's one-trial-at-a-time trainer, same configurations.

Every K trains the same N configurations (lr, reg drawn log-uniformly from the report's
fine range, Model 1, batch 20, the same trial seeds) in packs of K on the kept compiled
pack (model/train.py train_pack); each K's first pack is traced on a one-epoch warm-up
pack first, as a worker's first trials would be. "today" is the trainer as it was
before packing (one Keras Sequential per process reset between trials, tf.data feed,
the trial's seed shuffling), re-created here; it needs TensorFlow, so under JAX K = 1
is the baseline. Beside each K: the largest per-trial |delta val accuracy| against the
same trials at K = 1 (packing must not change results), and the FLOP/s achieved (on a
GPU against its fp32 and TF32 peaks). On a CPU under TensorFlow it then times each K's
convolutions alone (`conv_floor`): the time no scheduling of the other ops can go under.
`--dropout 0` shows what dropout costs. `--report-budget` also times the report's whole
budget: coarse 100 x 5 and fine 100 x 20 epochs packed at the best K, the 50-epoch
final alone.

    python benchmarks/bench_pack.py [--quick | --dry-run] [--ks 1,2,4] [--configs N]
        [--epochs E] [--dropout RATE] [--report-budget] [--synthetic N_TRAIN] [--budget-seconds S]
"""
from __future__ import annotations

import math
import os
import random
import sys
import time

import numpy as np

import _common as c

MACS = 60 * 60 * 32 * 27 + 30 * 30 * 64 * 288 + 15 * 15 * 86 * 576 + 4214 * 84 + 84 * 2
TRAIN_FLOP, FORWARD_FLOP = 6 * MACS, 2 * MACS  # per image: 187 / 62.4 MFLOP (Model 1)
GPU_PEAKS = {"H200": (67e12, 495e12), "H100": (67e12, 495e12), "A100": (19.5e12, 156e12)}  # fp32, TF32 dense


def draw(n: int, seed: int = 0, dropout: float = 0.25):
    from model.cnn import ModelConfig

    rng = np.random.default_rng(seed)
    return [(ModelConfig(lr=float(10 ** rng.uniform(-5, -3)), reg=float(10 ** rng.uniform(-5, -2)),
                         dropout=dropout), seed * 1_000_003 + i) for i in range(n)]


def run_packed(crops, members, k: int, epochs: int):
    """(wall seconds, val accuracies) of all members in packs of k, after a warm-up pack."""
    from model.train import TrainConfig, train_pack

    cfg = TrainConfig(epochs=epochs, batch_size=20, data_seed=0)
    train_pack(crops, members[:k], TrainConfig(epochs=1, batch_size=20))  # traces this K
    t = time.perf_counter()
    results = [r for i in range(0, len(members), k) for r in train_pack(crops, members[i:i + k], cfg)]
    wall = time.perf_counter() - t
    assert all(r.ok for r in results), [r.fail_reason for r in results]
    return wall, [r.val_accuracy for r in results]


def run_today(crops, members, epochs: int):
    """The one-trial-at-a-time trainer as it was before packing (TensorFlow only): one
    compiled Sequential kept per process, its variables overwritten from a fresh build of
    the trial's seed, Adam zeroed, lr and the L2 factor as variables, tf.data feed, one
    TensorFlow call per epoch. (wall seconds, val accuracies)."""
    import keras
    import tensorflow as tf

    from dataset.pipeline import datasets, normalized
    from model.cnn import architecture, compile_model

    factor = keras.Variable(0.0, dtype="float32", trainable=False)

    class VariableL2(keras.regularizers.Regularizer):
        def __call__(self, x):
            return factor * keras.ops.sum(keras.ops.square(x))

    steps = math.ceil(len(normalized(crops, "train")[1]) / 20)
    kept, accs = None, []
    tf.random.set_seed(0)

    def one(cfg, seed):
        nonlocal kept
        random.seed(seed)
        np.random.seed(seed)
        fresh = architecture(cfg, regularizer=VariableL2())
        if kept is None:
            compile_model(fresh, cfg.lr, steps)
            kept = fresh
        else:
            for dst, src in zip(kept.variables, fresh.variables, strict=True):
                dst.assign(src)
            for v in kept.optimizer.variables:
                v.assign(keras.ops.zeros(v.shape, v.dtype))
            kept.optimizer.learning_rate.assign(cfg.lr)
        factor.assign(cfg.reg)
        train_ds, val_ds = datasets(crops, 20, seed)
        return kept.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False)

    one(*members[0])  # traces
    t = time.perf_counter()
    for cfg, seed in members:
        accs.append(one(cfg, seed).history["val_accuracy"][-1])
    return time.perf_counter() - t, accs


def conv_floor(k: int, n_train: int, n_val: int, batch: int = 20, reps: int = 5) -> float:
    """Seconds per trial-epoch that a pack of k spends in its convolutions alone (TensorFlow,
    this machine): conv1 with k x 32 filters on the shared input, forward and its filter and
    bias gradients; per slice conv2 and conv3, forward and their input, filter and bias
    gradients; the validation crops forward only. Relu, pooling, dropout, the dense layers
    and Adam are left out, and the layers here do not wait for each other as the model's
    do, so no pack of k, however its other ops are scheduled, runs a trial-epoch in less
    time than this with these kernels. Each part's time is the best of `reps` runs."""
    import tensorflow as tf

    from model.cnn import CONV_FILTERS, INPUT_SHAPE

    rng = tf.random.Generator.from_seed(0)
    specs, hw, cin = [], INPUT_SHAPE[0], INPUT_SHAPE[-1]
    for i, cout in enumerate(CONV_FILTERS, 1):
        copies, filters = (1, k * cout) if i == 1 else (k, cout)
        specs += [(rng.uniform((batch, hw, hw, cin)), rng.uniform((3, 3, cin, filters), -0.1, 0.1),
                   tf.zeros((filters,)), rng.uniform((batch, hw, hw, filters)), i > 1)
                  for _ in range(copies)]
        hw, cin = hw // 2, cout

    @tf.function
    def train_step():
        grads = []
        for x, w, b, dy, needs_dx in specs:
            with tf.GradientTape() as tape:
                tape.watch([x, w, b])
                y = tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b)
            grads += tape.gradient(y, [x, w, b] if needs_dx else [w, b], output_gradients=dy)
        return grads

    @tf.function
    def forward():
        return [tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b) for x, w, b, _, _ in specs]

    def seconds(fn, calls: int = 5) -> float:
        fn()  # traces
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(calls):
                out = fn()
            out[-1].numpy()
            times.append((time.perf_counter() - t) / calls)
        return min(times)

    steps, val_steps = math.ceil(n_train / batch), math.ceil(n_val / batch)
    return (steps * seconds(train_step) + val_steps * seconds(forward)) / k


REPORT_BUDGET = ((100, 5), (100, 20), (1, 50))  # coarse, fine (packed), final (alone): 2,550 epochs
DRY_BUDGET = ((4, 1), (4, 2), (1, 2))


def report_budget(crops, k: int, stages=REPORT_BUDGET) -> float:
    """Seconds for the report's budget: coarse 100 x 5, fine 100 x 20 (packs of k), final 1 x 50."""
    from model.train import TrainConfig, train_pack

    t = time.perf_counter()
    for (n, epochs), kk in zip(stages, (k, k, 1)):
        members = draw(n, seed=epochs)
        for i in range(0, n, kk):
            train_pack(crops, members[i:i + kk], TrainConfig(epochs=epochs, batch_size=20))
    return time.perf_counter() - t


def device_peaks(where: str):
    for name, peaks in GPU_PEAKS.items():
        if name in where:
            return peaks
    return None


def main(argv=None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--ks", help="pack sizes, comma-separated (default by mode and device)")
    p.add_argument("--configs", type=int, help="configurations trained at every K")
    p.add_argument("--epochs", type=int, help="epochs per trial")
    p.add_argument("--report-budget", action="store_true", help="also time the report's 2,550 epochs")
    p.add_argument("--synthetic", type=int, metavar="N_TRAIN",
                   help="synthetic crops with N_TRAIN training images instead of the FDDB crops")
    p.add_argument("--dropout", type=float, default=0.25,
                   help="dropout rate of every trial (the report's 0.25; 0 shows what dropout costs)")
    p.add_argument("--budget-seconds", type=float, default=float("inf"),
                   help="start no further K once this much time has passed")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    import keras

    from dataset.archive import load_crops
    from model.train import describe_device

    backend, where = keras.backend.backend(), describe_device()
    gpu = where != "CPU"
    mode = c.mode(args)
    ks_default, n_default, e_default = {"dry-run": ("1,2", 2, 1), "quick": ("1,2,4,8", 8, 1),
                                        "full": ("1,2,4,8,16", 16, 2)}[mode]
    if gpu and not args.ks:
        ks_default, n_default = "1,2,4,8,16,32,64,128", 128
    ks = [int(k) for k in (args.ks or ks_default).split(",")]
    n, epochs = args.configs or n_default, args.epochs or e_default
    if any(n % k for k in ks):
        sys.exit(f"--configs {n} must be a multiple of every K ({ks}): each K trains the same trials")
    if args.synthetic:
        path = c.synthetic_crops(c.Path(os.environ.get("TMPDIR", "/tmp")) / f"facehpo-bench-{args.synthetic}.npz",
                                 args.synthetic)
    else:
        path = c.crops_path(args)
    crops = load_crops(path)
    n_train, n_val = (int((crops.split == s).sum()) for s in (0, 1))
    c.header("trial packing", args, data=f"{path} ({crops.meta.get('source')}, {n_train} train / "
             f"{n_val} val crops)", backend=f"Keras {keras.__version__} on {backend}", device=where,
             run=f"{n} configurations x {epochs} epochs, Model 1, batch 20, dropout {args.dropout:g}, "
             f"K in {ks}")
    members = draw(n, dropout=args.dropout)
    flop_per_trial = epochs * (n_train * TRAIN_FLOP + n_val * FORWARD_FLOP)
    today = None
    if backend == "tensorflow":
        wall, accs = run_today(crops, members, epochs)
        today = n / wall * 3600
        print(f"today's trainer (one trial at a time): {wall:.1f} s, {today:.1f} trials/hour", flush=True)
    rows, base_accs, base_rate = [], None, None
    print("    K  wall s  trials/h  x today  x K=1  max|d val_acc| vs K=1  mean d  GFLOP/s", flush=True)
    for k in ks:
        if time.perf_counter() - t_start > args.budget_seconds:
            print(f"    (K >= {k} skipped: past --budget-seconds {args.budget_seconds:g})")
            break
        wall, accs = run_packed(crops, members, k, epochs)
        rate = n / wall * 3600
        if base_accs is None:
            base_accs, base_rate = accs, rate
        delta = max(abs(a - b) for a, b in zip(accs, base_accs))
        bias = sum(a - b for a, b in zip(accs, base_accs)) / n
        gflops = n * flop_per_trial / wall / 1e9
        rows.append((k, rate, delta, gflops, bias))
        vs_today = f"{rate / today:7.2f}" if today else "      -"
        print(f"{k:5d} {wall:7.1f} {rate:9.1f} {vs_today} {rate / base_rate:6.2f} {delta:22.4f} {bias:+7.4f} "
              f"{gflops:8.1f}", flush=True)
    if today:  # again after the packs: a drift of the machine shows as two different rates
        wall, _ = run_today(crops, members, epochs)
        first, again = today, n / wall * 3600
        today = (first + again) / 2
        print(f"today's trainer again after the packs: {wall:.1f} s, {again:.1f} trials/hour "
              f"({again / first:.2f}x its first run); the verdict uses the mean, {today:.1f} trials/hour",
              flush=True)
    best = max(rows, key=lambda r: r[1])
    worst_delta = max(r[2] for r in rows)
    print(f"best K = {best[0]}: {best[1]:.1f} trials/hour; largest |d val_acc| at any K {worst_delta:.4f} "
          f"(val accuracy step {1 / n_val:.4f})")
    if len(rows) > 1:  # the criterion for floating-point noise: no bias over >= 16 configurations
        worst_bias = max((r for r in rows[1:]), key=lambda r: abs(r[4]))
        c.verdict(f"packed - unpacked val accuracy, mean over {n} configurations, worst K = {worst_bias[0]}, "
                  f"points", worst_bias[4] * 100, "within +-0.5", abs(worst_bias[4]) <= 0.005)
    if not gpu:  # what the CPU can give at most: its own float32 matmul rate, measured now
        peak = c.numpy_peak()["gflops"]
        k0, gflops0 = rows[0][0], rows[0][3]
        print(f"numpy float32 matmul 4096x4096 on this CPU: {peak:.1f} GFLOP/s; K = {k0} runs at "
              f"{gflops0 / peak:.0%} of it"
              + (f", today's trainer at {today * flop_per_trial / 3600 / 1e9 / peak:.0%}" if today else "")
              + f": no K can exceed {peak / gflops0:.2f}x K = {k0}")
    if not gpu and today:  # a tighter ceiling: the convolutions alone, K by K, timed now
        floors = {k: conv_floor(k, n_train, n_val) * epochs for k, *_ in rows}
        print("convolutions alone (forward and the gradients training needs, TensorFlow's kernels), "
              "s per trial: " + ", ".join(f"K = {k} {f:.2f} ({f * rate / 3600:.0%} of the pack's)"
                                          for (k, rate, *_), f in zip(rows, floors.values())))
        k_min = min(floors, key=floors.get)
        print(f"today's trainer takes {3600 / today:.2f} s per trial: with every other op free, no K "
              f"could exceed {3600 / today / floors[k_min]:.2f}x today's trainer (K = {k_min}'s convolutions)")
    peaks = device_peaks(where)
    if peaks:
        print(f"FLOP/s at K = {best[0]}: {best[3] / 1e3:.2f} TFLOP/s = {best[3] * 1e9 / peaks[0]:.1%} of fp32 "
              f"peak ({peaks[0] / 1e12:.0f} TFLOP/s), {best[3] * 1e9 / peaks[1]:.1%} of TF32 dense peak "
              f"({peaks[1] / 1e12:.0f})")
    if gpu:
        c.verdict(f"GPU trials/hour at K = {best[0]} / K = 1", best[1] / base_rate, ">= 10",
                  best[1] / base_rate >= 10)
    else:
        ref, name = (today, "today's trainer") if today else (base_rate, "K = 1 (no TensorFlow: no today's trainer)")
        c.verdict(f"CPU trials/hour at K = {best[0]} / {name}", best[1] / ref, ">= 1.5 with equal results",
                  best[1] / ref >= 1.5 and worst_delta <= 1 / n_val + 1e-9)
    if args.report_budget and time.perf_counter() - t_start > args.budget_seconds:
        print(f"report budget skipped: past --budget-seconds {args.budget_seconds:g}")
    elif args.report_budget:
        stages = DRY_BUDGET if args.dry_run else REPORT_BUDGET
        seconds = report_budget(crops, best[0], stages)
        total = sum(n * e for n, e in stages)
        c.verdict(f"report budget ({total:,} epochs: {' + '.join(f'{n} x {e}' for n, e in stages)}, "
                  f"K = {best[0]}) seconds", seconds, "<= 300", seconds <= 300)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
