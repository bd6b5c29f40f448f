"""The coordinator of `facehpo pipeline`: coarse -> fine -> final in one process, on the
embedded default or any storage.

Every step is idempotent: a re-run creates nothing twice and trains only what is still
WAITING, so an interrupted pipeline resumes where it stopped.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from study import storage as db
from study.errors import SetupError
from study.locks import Lock
from study.options import epoch_progress, model_variant, option, out_dir, pack, run_name, seed
from study.pruning import PRUNERS
from study.queue import Queue
from study.rounds import ROUND_NEEDS_ADAPTIVE, SAMPLERS
from study.space import NarrowRule
from study.stages import StageConfig, create_coarse, create_final, create_fine, study_name
from study.worker import WorkerConfig, WorkerSummary, run_worker


@dataclass(frozen=True)
class Profile:
    coarse_trials: int
    coarse_epochs: int
    fine_trials: int
    fine_epochs: int
    k: int
    final_epochs: int


PROFILES = {
    # a few minutes on 2 CPU cores with the built-in sample
    "quick": Profile(coarse_trials=12, coarse_epochs=3, fine_trials=6, fine_epochs=5, k=4, final_epochs=10),
    # seconds: for smoke tests and trying the commands
    "smoke": Profile(coarse_trials=4, coarse_epochs=1, fine_trials=2, fine_epochs=1, k=2, final_epochs=1),
    # the report's budgets
    "seed": Profile(coarse_trials=100, coarse_epochs=5, fine_trials=100, fine_epochs=20, k=10,
                    final_epochs=50),
}


@dataclass(frozen=True)
class PipelineConfig:
    name: str = run_name()
    profile: str = option("quick", flag="--profile", choices=tuple(PROFILES),
                          help="budgets: quick (minutes), seed (the report's), smoke (seconds)")
    model: int = model_variant()
    seed: int = seed()
    out_dir: Path = out_dir()
    epoch_progress: bool = epoch_progress()
    pruner: str = option("none", flag="--pruner", choices=PRUNERS,
                         help="the coarse and fine studies' pruner, stored on each")
    pack: str = pack()
    # None: as stored when resuming, else random
    sampler: str | None = option(None, flag="--sampler", choices=SAMPLERS,
                                 help="the fine stage's sampler: random (default), tpe or gp in rounds")
    coarse_sampler: str | None = option(None, flag="--coarse-sampler", choices=SAMPLERS,
                                        help="the coarse stage's sampler (default random: the report's search)")
    round_size: int | None = option(None, flag="--round", kind="positive", metavar="R",
                                    help="trials per round of the tpe / gp stages (default ~sqrt(trials), 2-10)")

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise SetupError(f"unknown profile {self.profile!r}: choose {' or '.join(PROFILES)}")
        if self.round_size is not None and not {self.sampler, self.coarse_sampler} & {"tpe", "gp"}:
            raise SetupError(ROUND_NEEDS_ADAPTIVE)

    def stage(self, sampler: str | None) -> dict:
        """StageConfig's sampler fields for a stage drawn by `sampler` (--round: tpe / gp only)."""
        return {"sampler": sampler, "round_size": self.round_size if sampler in ("tpe", "gp") else None}


def drawn(study) -> str:
    """', tpe in rounds of 4' for an adaptive study, else nothing."""
    a = study.user_attrs
    if a.get("sampler", "random") == "random":
        return ""
    return f", {a['sampler']} in rounds of {a['round_size']}"


def release_orphans(storage, name: str) -> int:
    """Embedded mode only: with the pipeline lock held no one else runs trials, so a
    RUNNING trial belongs to a process that died. Fail it and re-queue it now instead
    of waiting for its heartbeat to expire."""
    n = 0
    for stage in ("coarse", "fine", "final"):
        sname = study_name(name, stage)
        if not db.exists(storage, sname):
            continue
        study = db.load(storage, sname)
        queue = Queue(storage, study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            queue.requeue(queue.trial_id(t.number), "orphaned: the process running it died; re-queued")
            n += 1
    return n


def run_pipeline(storage, crops, cfg: PipelineConfig, device: str = "CPU") -> list[WorkerSummary]:
    p = PROFILES[cfg.profile]
    lock = Lock(storage, f"pipeline:{cfg.name}")
    if not lock.acquire(wait=False):
        raise SetupError(f"another pipeline is running on studies {cfg.name}-*: wait for it, "
                         "or pass another --name")
    try:
        if storage.engine.dialect.name == "sqlite":
            n = release_orphans(storage, cfg.name)
            if n:
                print(f"re-queued {n} trial(s) left RUNNING by a process that died", file=sys.stderr)
        summaries = []
        steps = [
            ("coarse", lambda: create_coarse(storage, StageConfig(
                cfg.name, cfg.model, p.coarse_trials, p.coarse_epochs, cfg.seed, pruner=cfg.pruner,
                **cfg.stage(cfg.coarse_sampler)), crops.meta)),
            ("fine", lambda: create_fine(storage, StageConfig(
                cfg.name, cfg.model, p.fine_trials, p.fine_epochs, cfg.seed, pruner=cfg.pruner,
                **cfg.stage(cfg.sampler)), NarrowRule(k=p.k))),
            ("final", lambda: create_final(storage, cfg.name, p.final_epochs)),
        ]
        for stage, create in steps:
            study = create()
            print(f"== {stage}: {study.study_name}, {study.user_attrs['n_trials']} trial(s) x "
                  f"{study.user_attrs['epochs']} epochs{drawn(study)}", file=sys.stderr, flush=True)
            summary = run_worker(storage, crops, WorkerConfig(
                study=study.study_name, out_dir=cfg.out_dir, epoch_progress=cfg.epoch_progress,
                pack=cfg.pack),
                device=device)
            summaries.append(summary)
            if summary.interrupted:
                break
        return summaries
    finally:
        lock.release()
