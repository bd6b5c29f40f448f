"""Shared by the benchmark scripts: machine header, crop files, scratch PostgreSQL
databases, timing helpers. Imports no TensorFlow (scripts that train import it).

Every comparison in a script is a ratio of two runs in the same invocation, run
interleaved where that is possible, because absolute times drift on a shared machine.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/NAME.py` from a clone, without installing
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

OUT = ROOT / "benchmarks" / "out"
DEFAULT_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
DEFAULT_CROPS = Path(os.environ.get("FACEHPO_BENCH_CROPS", "/tmp/bench/crops.npz"))


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a reduced size that runs in minutes")
    p.add_argument("--dry-run", action="store_true",
                   help="the smallest run on synthetic crops, to check the script works (seconds)")
    return p


def mode(args) -> str:
    return "dry-run" if args.dry_run else "quick" if args.quick else "full"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def header(name: str, args, **extra) -> None:
    """What, where, when: the first lines of every benchmark's output."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== {name} [{mode(args)}] {now}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load:.1f} at start; "
          f"python {platform.python_version()}")
    for k, v in extra.items():
        print(f"{k}: {v}")
    sys.stdout.flush()


def crops_path(args, n_train: int = 40) -> Path:
    """The real FDDB crops (built once from FDDB_ROOT), or synthetic ones for --dry-run."""
    if args.dry_run:
        return synthetic_crops(Path(os.environ.get("TMPDIR", "/tmp")) / f"facehpo-bench-{n_train}.npz",
                               n_train)
    path = DEFAULT_CROPS
    if not path.is_file():
        from dataset.crops import build_fddb

        fddb = os.environ.get("FDDB_ROOT", str(ROOT.parent / "shared" / "fddb"))
        path.parent.mkdir(parents=True, exist_ok=True)
        build_fddb(fddb, path, progress=False)
    return path


def load(args, title: str, **extra):
    """The crop file for this mode, loaded, and the header printed: (path, CropSet)."""
    from dataset.archive import load_crops

    path = crops_path(args)
    crops = load_crops(path)
    header(title, args, **extra, data=f"{path} ({crops.meta.get('source')})")
    return path, crops


def synthetic_crops(path: Path, n_train: int = 40, seed: int = 0) -> Path:
    """n_train + n_train/4 val + n_train/4 test crops: a bright square is a "face"."""
    import numpy as np

    from dataset.archive import save_crops

    if path.is_file():
        return path
    n_val = max(2, n_train // 4)
    n = n_train + 2 * n_val
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2 + 1)[:n]
    x = rng.integers(0, 100, (n, 60, 60, 3)).astype(np.uint8)
    x[y == 1, 18:42, 18:42] += 150
    split = np.repeat([0, 1, 2], [n_train, n_val, n_val])
    save_crops(path, x, y, split, [f"synthetic/{i}" for i in range(n)], np.zeros((n, 4)),
               {"source": "synthetic", "seed": seed})
    return path


def pg_url() -> str:
    return os.environ.get("FACEHPO_TEST_PG", DEFAULT_PG)


@contextlib.contextmanager
def scratch_pg():
    """A new empty PostgreSQL database for one benchmark, dropped afterwards: its URL."""
    import sqlalchemy

    base = pg_url()
    name = f"facehpo_bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as e:
        sys.exit(f"PostgreSQL not reachable at {base} (set FACEHPO_TEST_PG): {str(e.orig).strip()}")
    try:
        yield sqlalchemy.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def drain(storage, crops, study: str, pruner: str = "none", progress: bool = False):
    """One facehpo worker in this process takes every trial of `study` (the default
    objective: it trains) with `pruner` set as the study's (as `init --pruner` does).
    (wall seconds of run_worker, the study's trials afterwards)."""
    import optuna

    from model.device import configure
    from study.worker import WorkerConfig, run_worker

    optuna.load_study(study_name=study, storage=storage).set_user_attr("pruner", pruner)
    cfg = WorkerConfig(study=study, progress=progress, out_dir=OUT / "scratch")
    device = configure()
    t = time.perf_counter()
    run_worker(storage, crops, cfg, device=device)
    wall = time.perf_counter() - t
    return wall, optuna.load_study(study_name=study, storage=storage).get_trials()


def figure():
    """A 7 x 4.2 in figure drawn without a display: (pyplot, figure, axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    return plt, fig, ax


def save_best_plot(plt, fig, ax, path: Path, xlabel: str, title: str) -> None:
    """Label a best-validation-accuracy-so-far plot, write it as a PNG, close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("best validation accuracy (COMPLETE trials)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def median(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt(xs, digits: int = 3) -> str:
    return "[" + ", ".join(f"{x:.{digits}f}" for x in xs) + "]"


def verdict(name: str, value: float, target: str, met: bool) -> None:
    print(f"TARGET {name}: {value:.3f} (target {target}) -> {'MET' if met else 'NOT MET'}", flush=True)


PEAK_CODE = r"""
import json, time, numpy as np, threadpoolctl
n = int(__import__("sys").argv[1])
rng = np.random.default_rng(0)
a = rng.random((n, n), dtype=np.float32); b = rng.random((n, n), dtype=np.float32)
a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(4))
info = [{k: d.get(k) for k in ("internal_api", "architecture", "num_threads", "version")}
        for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
print(json.dumps({"gflops": 2 * n ** 3 / best / 1e9, "blas": info}))
"""


def numpy_peak(n: int = 4096) -> dict:
    """float32 matmul GFLOP/s in a child without the OpenBLAS core-type overrides."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, "-c", PEAK_CODE, str(n)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])
