"""Training throughput: facehpo's trainer (model.train) against plain Keras fit on NumPy.

Both train Model 1 on the same 1,600 FDDB crops at batch 20 with 400 validation crops
each epoch, in one process, interleaved round by round (trainer, plain, plain,
trainer, ...) so load on a shared machine hits both alike. The plain run is
`build_model(cfg).fit(x, y, batch_size=20, validation_data=(xv, yv))` on the same
normalized float32 arrays: Keras's own NumPy adapter, default compile settings.

It also counts the model's FLOPs from its layers and prints the trainer's achieved
FLOP/s as a fraction of the float32 matrix-multiply peak NumPy reaches in the same
run (np.matmul of two 4096x4096 float32 matrices, in a child process with
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, its BLAS kernel read by threadpoolctl).

    python benchmarks/bench_train.py [--quick | --dry-run]
"""
from __future__ import annotations

import resource
import sys
import time

import _common as c


def layer_macs(model) -> list[tuple[str, int]]:
    """Multiply-adds per image of every Conv2D and Dense layer, from their shapes."""
    import keras

    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, f = layer.output.shape
            kh, kw = layer.kernel_size
            rows.append((layer.name, h * w * f * kh * kw * layer.input.shape[-1]))
        elif isinstance(layer, keras.layers.Dense):
            rows.append((layer.name, layer.input.shape[-1] * layer.units))
    return rows


def flops(model) -> dict:
    """Per image: forward = 2 x MACs; training step by the usual rule = 3 x forward
    (forward, input gradient, weight gradient); exact = without the first layer's
    input gradient, which backpropagation never computes."""
    rows = layer_macs(model)
    macs = sum(m for _, m in rows)
    return {"layers": rows, "forward": 2 * macs, "train_rule": 6 * macs,
            "train_exact": 6 * macs - 2 * rows[0][1]}


def _now() -> tuple[float, float]:
    """(wall, process CPU) seconds: CPU time is steadier when neighbours load the machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime


def _timer(sink: list):
    """A Keras callback appending (wall, cpu) seconds of every epoch to `sink`."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = _now()

        def on_epoch_end(self, epoch, logs=None):
            sink.append(tuple(b - a for a, b in zip(self.t, _now())))

    return Timer()


def run_trainer(crops, mcfg, epochs: int, seed: int) -> list[tuple]:
    """facehpo's trainer; (wall, cpu) per epoch, wall as the trainer's own history has it."""
    from model.train import TrainConfig, train

    marks = [_now()]  # the CPU time between epoch hooks (the first includes the run's reset)
    result = train(crops, mcfg, TrainConfig(epochs=epochs, batch_size=20, seed=seed),
                   on_epoch=lambda epoch, shown: marks.append(_now()) or ())
    assert result.ok, result.fail_reason
    return [(m.seconds, b[1] - a[1]) for m, a, b in zip(result.history, marks, marks[1:])]


def run_trainer_bf16(crops, mcfg, epochs: int, seed: int) -> list[tuple]:
    """The trainer's feed and compile settings under Keras's mixed_bfloat16 policy (not
    facehpo's default: what the AMX / AVX512-BF16 units of this CPU would give). Built
    here because model.train's clear_session() resets the dtype policy."""
    import keras

    from dataset.pipeline import datasets
    from model.cnn import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        train_ds, val_ds = datasets(crops, 20, seed)
        times: list = []
        build_model(mcfg, steps_per_execution=int(train_ds.cardinality())).fit(
            train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False,
            callbacks=[_timer(times)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return times


def run_plain(crops, mcfg, epochs: int, seed: int) -> list[tuple]:
    import keras

    from dataset.pipeline import normalized
    from model.cnn import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    (x, y), (xv, yv) = normalized(crops, "train"), normalized(crops, "val")
    times: list = []
    build_model(mcfg).fit(x, y, batch_size=20, validation_data=(xv, yv), epochs=epochs, verbose=0,
                          callbacks=[_timer(times)])
    return times


def main(argv=None) -> int:
    args = c.parser(__doc__).parse_args(argv)
    rounds, epochs, n = {"dry-run": (1, 2, 512), "quick": (2, 3, 4096), "full": (4, 4, 4096)}[c.mode(args)]
    crops_file = c.crops_path(args)
    import tensorflow as tf

    from dataset.archive import load_crops
    from model.cnn import ModelConfig, build_model

    crops = load_crops(crops_file)
    n_train, n_val = (int((crops.split == s).sum()) for s in (0, 1))
    c.header("training throughput", args, data=f"{crops_file} ({n_train} train / {n_val} val crops), "
             f"Model 1, batch 20, {rounds} rounds x {epochs} epochs each way",
             tensorflow=f"{tf.__version__}, intra-op threads "
             f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    mcfg = ModelConfig(variant=1, lr=1e-4, reg=1e-4)
    f = flops(build_model(mcfg))
    for name, macs in f["layers"]:
        print(f"  {name:8s} {macs / 1e6:8.3f} M multiply-adds per image")
    print(f"FLOPs per image: forward {f['forward'] / 1e6:.1f} M; training step {f['train_rule'] / 1e6:.1f} M "
          f"(3 x forward), {f['train_exact'] / 1e6:.1f} M exact (no input gradient for conv1)")
    epoch_flops = n_train * f["train_rule"] + n_val * f["forward"]

    arms = {"trainer": lambda r: run_trainer(crops, mcfg, epochs, r),
            "plain": lambda r: run_plain(crops, mcfg, epochs, r),
            "trainer-bf16": lambda r: run_trainer_bf16(crops, mcfg, epochs, r)}
    steady = {k: [] for k in arms}    # (wall, cpu) of epochs 2..n
    first = {k: [] for k in arms}
    peaks = [c.numpy_peak(n)]
    for r in range(rounds):
        names = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for name in names:
            secs = arms[name](r)
            first[name].append(secs[0][0])
            steady[name].extend(secs[1:])
            print(f"round {r + 1} {name:12s} epoch seconds wall {c.fmt([s[0] for s in secs])} "
                  f"cpu {c.fmt([s[1] for s in secs])}", flush=True)
        peaks.append(c.numpy_peak(n))
    print(f"numpy float32 matmul {n}x{n}: GFLOP/s {c.fmt([p['gflops'] for p in peaks], 1)}; "
          f"BLAS {peaks[0]['blas']}")
    med = {k: (c.median([s[0] for s in v]), c.median([s[1] for s in v])) for k, v in steady.items()}
    for name in arms:
        print(f"{name:12s} steady epoch (epochs 2..{epochs}) median: wall {med[name][0]:.3f} s, "
              f"cpu {med[name][1]:.3f} s; first epoch median wall {c.median(first[name]):.3f} s")
    speedup = med["plain"][0] / med["trainer"][0]
    print(f"speed-up over plain fit, by process CPU seconds: trainer "
          f"{med['plain'][1] / med['trainer'][1]:.3f}, trainer-bf16 {med['plain'][1] / med['trainer-bf16'][1]:.3f}; "
          f"by wall: trainer-bf16 {med['plain'][0] / med['trainer-bf16'][0]:.3f} (mixed_bfloat16 is not the default)")
    c.verdict("trainer (float32, the default) speed-up over plain fit, median steady epoch wall", speedup,
              ">= 2.0", speedup >= 2.0)
    peak = max(p["gflops"] for p in peaks)
    best = min(s[0] for s in steady["trainer"])
    achieved_med, achieved_best = epoch_flops / med["trainer"][0] / 1e9, epoch_flops / best / 1e9
    print(f"epoch work {epoch_flops / 1e9:.1f} GFLOP ({n_train} training images x "
          f"{f['train_rule'] / 1e6:.1f} M + {n_val} validation images x {f['forward'] / 1e6:.1f} M); "
          f"trainer achieves {achieved_med:.1f} GFLOP/s median, {achieved_best:.1f} best; "
          f"numpy peak (best of {len(peaks)}) {peak:.1f} GFLOP/s")
    frac = achieved_best / peak
    c.verdict("trainer FLOP/s / numpy float32 matmul peak (best vs best)", frac, ">= 0.65", frac >= 0.65)
    print(f"  (median epoch vs median peak: {achieved_med / c.median([p['gflops'] for p in peaks]):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
