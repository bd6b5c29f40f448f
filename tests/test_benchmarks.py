"""Every benchmark script in benchmarks/ runs in its --dry-run mode and prints its figures.

The dry runs use synthetic crops and a handful of one-epoch trials, so their figures
mean nothing; what is checked is that each script still works end to end (the
benchmarks are run by hand, at --quick or full size, for BENCHMARKS.md). The scripts
that train run in this process (TensorFlow is imported once); the ones that measure
worker processes start them as the scripts always do.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCH.glob("bench_*.py"))
NEEDS_PG = {"bench_overhead", "bench_pruning", "bench_workers", "bench_memory", "bench_samplers"}
# bench_gpu: the whole path, one worker (time budget); bench_pack: its report-budget path too, scaled down
EXTRA_ARGS = {"bench_gpu": ["--workers", "1"], "bench_pack": ["--report-budget"]}
EXPECT = {"bench_gpu": ("1 worker(s): 2 trials",), "bench_memory": ("RSS MB after trial: 1:",),
          "bench_pack": ("numpy float32 matmul 4096x4096 on this CPU", "with every other op free, no K"),
          "bench_step": ("K = 2: all ops per trial at",),
          "bench_pruning": ("plot: benchmarks/out/pruning-dry-run.png",)}


def test_every_script_is_documented():
    """Each script test_dry_run finds (it runs them all) has its section in BENCHMARKS.md."""
    doc = (BENCH.parent / "BENCHMARKS.md").read_text()
    assert SCRIPTS and [s for s in SCRIPTS if f"{s}.py" not in doc] == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_dry_run(name, request, capsys, monkeypatch, tmp_path):
    if name in NEEDS_PG:
        request.getfixturevalue("pg_url")  # skips (or fails under CI=true) without PostgreSQL
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(name)
    assert module.main(["--dry-run", *EXTRA_ARGS.get(name, [])]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"== ") and "[dry-run]" in out.splitlines()[0], out
    assert "machine: " in out
    if name in EXPECT:
        assert all(e in out for e in EXPECT[name]), out
    else:
        assert "TARGET " in out, out
    if name in ("bench_pruning", "bench_samplers"):
        png = BENCH / "out" / f"{name[6:]}-dry-run.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        png.unlink()
    sys.modules.pop(name, None)
