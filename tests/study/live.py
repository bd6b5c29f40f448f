"""For tests that run real workers: tiny crop files, polling the study database."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from dataset.archive import load_crops, save_crops
from dataset.sample import build_sample


def tiny_crops(folder: Path, train: int = 40, val: int = 20, test: int = 20) -> Path:
    """`folder/tiny-TRAIN.npz`: the first train / val / test crops of the built-in sample,
    half faces, half non-faces per split (each count must be even)."""
    out = folder / f"tiny-{train}-{val}-{test}.npz"
    if out.is_file():
        return out
    sample = folder / "sample.npz"
    s = load_crops(sample) if sample.is_file() else build_sample(sample)
    keep = np.concatenate([np.flatnonzero((s.split == i) & (s.y == c))[: n // 2]
                           for i, n in enumerate((train, val, test)) for c in (0, 1)])
    save_crops(out, s.x[keep], s.y[keep], s.split[keep], s.source[keep], s.box[keep],
               {"source": "builtin-sample", "note": "tiny cut of the built-in sample, for tests"})
    return out


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    """Poll `check()` until it returns something truthy; that value, or AssertionError."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def trials(url: str, study: str) -> list[FrozenTrial]:
    """All trials of `study`, read through a fresh storage (no cache, no heartbeat)."""
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def running_of(url: str, study: str, worker: str) -> FrozenTrial | None:
    """The RUNNING trial that worker `worker` (its FACEHPO_WORKER_ID) is training, if any."""
    return next((t for t in trials(url, study)
                 if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == worker), None)


def by_state(ts) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in ts:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out
