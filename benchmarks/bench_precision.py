"""float32 (facehpo's default) against Keras's mixed_bfloat16 policy: epoch time and
validation accuracy, same configurations, seeds and data, one process.

bfloat16 is the one lever left for a 2x faster epoch on a CPU with bfloat16 units
(AVX512-BF16, AMX), so before it could become a default its effect on what the search
selects by has to be known. Each configuration is trained once per policy, all float32
runs first (the trainer keeps one compiled model per policy, model/compiled.py).
Configurations: from the report's fine ranges (lr 1e-5..1e-3, reg 1e-5..1e-2).

    python benchmarks/bench_precision.py [--quick | --dry-run]
"""
from __future__ import annotations

import sys

import _common as c

CONFIGS = ((1e-4, 1e-3), (3e-4, 1e-4), (1e-3, 1e-2), (5e-5, 1e-5))  # (lr, reg)


def main(argv=None) -> int:
    args = c.parser(__doc__).parse_args(argv)
    configs, epochs = {"dry-run": (CONFIGS[:1], 2), "quick": (CONFIGS[:2], 8),
                       "full": (CONFIGS, 15)}[c.mode(args)]
    _, crops = c.load(args, "precision: float32 vs mixed_bfloat16",
                      run=f"{len(configs)} configurations x {epochs} epochs, Model 1, batch 20, seed 0")
    import keras

    from model.cnn import ModelConfig
    from model.train import TrainConfig, train

    results = {}
    try:
        for policy in ("float32", "mixed_bfloat16"):
            keras.mixed_precision.set_global_policy(policy)
            for lr, reg in configs:
                r = train(crops, ModelConfig(lr=lr, reg=reg), TrainConfig(epochs=epochs, seed=0))
                assert r.ok, r.fail_reason
                steady = c.median([m.seconds for m in r.history[1:]])
                results[policy, lr, reg] = (r.val_accuracy, steady)
                print(f"{policy:14s} lr {lr:.0e} reg {reg:.0e}: last-epoch val accuracy "
                      f"{r.val_accuracy:.4f}, best epoch {max(m.val_accuracy for m in r.history):.4f}, "
                      f"steady epoch median {steady:.3f} s", flush=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    diffs = [results["mixed_bfloat16", lr, reg][0] - results["float32", lr, reg][0] for lr, reg in configs]
    speed = [results["float32", lr, reg][1] / results["mixed_bfloat16", lr, reg][1] for lr, reg in configs]
    print(f"val accuracy bf16 - float32 per configuration: {c.fmt(diffs, 4)}; "
          f"epoch speed-up float32 / bf16: {c.fmt(speed)}")
    worst = min(diffs)
    c.verdict("bf16 val accuracy - float32's, worst configuration (as good: within 0.5 points)",
              worst, ">= -0.005", worst >= -0.005)
    return 0


if __name__ == "__main__":
    sys.exit(main())
