"""GPU: epoch time, trials per hour and GPU utilisation for 1, 2 and 4 workers sharing
one GPU. Written to run unchanged on a GPU machine; never run on one yet (the
development machines have none), so no GPU figure exists. On CPU, --dry-run checks
that it works.

For each worker count W: `facehpo init` a coarse study of T trials x E epochs, then
start W `facehpo worker` processes at once (the CLI, one GPU: whatever
CUDA_VISIBLE_DEVICES the caller set; TensorFlow's memory growth lets them share it),
sampling `nvidia-smi --query-gpu=utilization.gpu,memory.used` every second while they
run. Reported: median steady epoch seconds (epochs 2.., from the trials' histories),
trials per hour (T / wall), mean and max GPU utilisation, peak GPU memory, and the
device the workers recorded on their trials.

    python benchmarks/bench_gpu.py [--quick | --dry-run] [--storage URL] [--workers 1 2 4]

Storage: an embedded SQLite file in a temporary folder unless --storage is given
(SQLite workers take turns to pop a trial under a file lock; pass a PostgreSQL URL on a server).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import _common as c


class GpuSampler(threading.Thread):
    """nvidia-smi once a second: (utilisation %, memory MiB) of every visible GPU."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.smi = shutil.which("nvidia-smi")

    def run(self):
        while self.smi and not self.stop.is_set():
            out = subprocess.run([self.smi, "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            for line in out.stdout.strip().splitlines()[:1]:  # the first visible GPU
                util, mem = (float(v) for v in line.split(","))
                self.samples.append((util, mem))
            self.stop.wait(1.0)


def facehpo(*argv) -> list[str]:
    return [sys.executable, "-m", "study.cli", *map(str, argv)]


def run(workers: int, trials: int, epochs: int, storage: str, crops_file, tmp: str) -> dict:
    import optuna

    env = {**os.environ, "PYTHONPATH": str(c.ROOT)}
    name = f"gpu{workers}"
    common = ["--storage", storage, "--data", crops_file]
    init = subprocess.run(facehpo("init", "--name", name, "--trials", trials, "--epochs", epochs, *common),
                          capture_output=True, text=True, env=env, cwd=tmp)
    if init.returncode != 0:
        sys.exit(f"facehpo init failed: {init.stderr.strip()}")
    sampler = GpuSampler()
    sampler.start()
    t = time.perf_counter()
    procs = [subprocess.Popen(facehpo("worker", "--study", f"{name}-coarse", "--worker-id", f"w{i}",
                                      "--out", tmp, *common),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
             for i in range(workers)]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t
    sampler.stop.set()
    sampler.join()
    bad = [e for p, e in zip(procs, errors) if p.returncode != 0]
    if bad:
        sys.exit(f"a worker failed: {bad[0].strip().splitlines()[-1]}")
    done = [t for t in optuna.load_study(study_name=f"{name}-coarse", storage=storage).get_trials()
            if t.state.name == "COMPLETE"]
    steady = [e["seconds"] for t in done for e in t.user_attrs["history"][1:]]
    first = [t.user_attrs["history"][0]["seconds"] for t in done]
    util = [s[0] for s in sampler.samples]
    return {"wall": wall, "complete": len(done), "trials_per_hour": len(done) / wall * 3600,
            "epoch": c.median(steady), "first_epoch": c.median(first),
            "devices": sorted({t.user_attrs.get("device", "?") for t in done}),
            "gpu_util_mean": sum(util) / len(util) if util else None,
            "gpu_util_max": max(util) if util else None,
            "gpu_mem_max": max(s[1] for s in sampler.samples) if sampler.samples else None}


def main(argv=None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--storage", help="database URL (default: a SQLite file in a temporary folder)")
    p.add_argument("--workers", type=int, nargs="+", help="worker counts (default 1 2 4; dry-run 1 2)")
    args = p.parse_args(argv)
    trials, epochs = {"dry-run": (2, 1), "quick": (8, 3), "full": (24, 5)}[c.mode(args)]
    counts = args.workers or ((1, 2) if args.dry_run else (1, 2, 4))
    crops_file = c.crops_path(args)
    smi = shutil.which("nvidia-smi")
    c.header("GPU workers", args, run=f"{trials} trials x {epochs} epochs per worker count, "
             f"workers {counts}, {crops_file}",
             gpu=f"nvidia-smi at {smi}" if smi else "no nvidia-smi: GPU utilisation not measured",
             CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"))
    with tempfile.TemporaryDirectory(prefix="facehpo-gpu-") as tmp:
        for w in counts:
            storage = args.storage or f"sqlite:///{tmp}/gpu{w}.db"
            r = run(w, trials, epochs, storage, crops_file, tmp)
            util = (f"GPU util mean {r['gpu_util_mean']:.0f} % max {r['gpu_util_max']:.0f} %, "
                    f"GPU memory max {r['gpu_mem_max']:.0f} MiB" if r["gpu_util_mean"] is not None
                    else "GPU util n/a")
            print(f"{w} worker(s): {r['complete']} trials in {r['wall']:.1f} s = "
                  f"{r['trials_per_hour']:.0f} trials/hour; steady epoch median {r['epoch']:.3f} s "
                  f"(first {r['first_epoch']:.3f} s); {util}; devices {r['devices']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
