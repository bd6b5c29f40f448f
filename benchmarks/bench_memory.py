"""Memory of one worker over many trials: resident set after every trial, and the peak.

A `facehpo worker` process (the CLI, as an operator starts it) drains a coarse study of
T one-epoch trials on the real FDDB crops from PostgreSQL. At each of its per-trial
progress lines this script reads the worker's VmRSS and VmHWM (peak) from /proc.
Flat means: after a warm-up of 5 trials, the least-squares slope is under 1 MB per
trial and the last trial's RSS is within 5 % of the RSS after trial 5.

    python benchmarks/bench_memory.py [--quick | --dry-run]
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import _common as c

WARMUP = 5
LINE = re.compile(r"^\[(\S+)\] trial \d+ .*\((\d+)/\d+ finished\)$")


def status_mb(pid: int, key: str) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def slope(xs, ys) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def facehpo(*argv):
    return [sys.executable, "-m", "study.cli", *map(str, argv)]


def main(argv=None) -> int:
    args = c.parser(__doc__).parse_args(argv)
    trials = {"dry-run": 2, "quick": 15, "full": 40}[c.mode(args)]
    warmup = min(WARMUP, trials - 1)
    crops_file = c.crops_path(args)
    if not Path("/proc/self/status").is_file():
        sys.exit("needs Linux /proc")
    c.header("worker memory", args, storage="PostgreSQL (scratch database)",
             run=f"{trials} trials x 1 epoch, Model 1, one `facehpo worker` process, {crops_file}")
    env = {**os.environ, "PYTHONPATH": str(c.ROOT)}
    rss, hwm = {}, {}
    with c.scratch_pg() as url:
        common = ["--storage", url, "--data", crops_file]
        init = subprocess.run(facehpo("init", "--name", "mem", "--trials", trials, "--epochs", 1, *common),
                              capture_output=True, text=True, env=env, cwd=c.ROOT)
        if init.returncode != 0:
            sys.exit(f"facehpo init failed: {init.stderr.strip()}")
        w = subprocess.Popen(facehpo("worker", "--study", "mem-coarse", "--out", c.OUT / "scratch", *common),
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=c.ROOT)
        for line in w.stderr:
            m = LINE.match(line.strip())
            if m:
                k = int(m.group(2))
                rss[k], hwm[k] = status_mb(w.pid, "VmRSS"), status_mb(w.pid, "VmHWM")
        if w.wait(timeout=3600) != 0:
            sys.exit(f"worker exited with {w.returncode}")
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    ks = sorted(rss)
    print("RSS MB after trial: " + ", ".join(f"{k}: {rss[k]:.0f}" for k in ks))
    after = [k for k in ks if k >= warmup]
    s = slope(after, [rss[k] for k in after])
    growth = rss[ks[-1]] / rss[warmup] - 1
    print(f"peak RSS (VmHWM) {max(hwm.values()):.0f} MB; largest child peak by getrusage "
          f"{peak_child:.0f} MB; slope after trial {warmup}: {s:+.2f} MB/trial; "
          f"trial {ks[-1]} vs trial {warmup}: {100 * growth:+.1f} %")
    c.verdict("RSS slope after warm-up, MB per trial", s, "< 1.0 and growth < 5 %",
              s < 1.0 and abs(growth) < 0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
