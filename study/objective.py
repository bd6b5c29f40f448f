"""The only place that touches an Optuna trial: trial -> configs -> model.train -> value.

TensorFlow is imported lazily, inside the call, so the rest of `study` stays light.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from study.errors import TrialFailed
from study.space import SearchSpace


@dataclass(frozen=True)
class WorkerInfo:
    worker: str
    host: str
    device: str

    @classmethod
    def here(cls, worker: str | None, device: str) -> "WorkerInfo":
        import os

        host = socket.gethostname()
        return cls(worker=worker or f"{host}-{os.getpid()}", host=host, device=device)


@dataclass(frozen=True)
class ObjectiveConfig:
    stage: str            # coarse | fine | final
    model: int
    epochs: int
    batch_size: int
    space: dict           # {"lr": [low, high], "reg": [low, high]}
    out_dir: Path         # where the final stage writes its model, plots and JSON
    pruning: bool = True  # report per-epoch val accuracy (and prune if the pruner says so)
    progress: bool = False
    seed: int = 0         # the study's seed: the data order of every epoch, the same for all trials

    @classmethod
    def from_study(cls, attrs: dict, out_dir: Path, progress: bool = False) -> "ObjectiveConfig":
        return cls(stage=attrs["stage"], model=int(attrs["model"]), epochs=int(attrs["epochs"]),
                   batch_size=int(attrs["batch_size"]), space=attrs["space"], out_dir=out_dir,
                   progress=progress, seed=int(attrs.get("seed", 0)))


class Objective:
    """Callable for `study.optimize`. `on_start` runs first (on SQLite the worker releases
    its claim lock there)."""

    def __init__(self, crops, cfg: ObjectiveConfig, info: WorkerInfo,
                 on_start: Callable[[], None] | None = None):
        self.crops, self.cfg, self.info, self.on_start = crops, cfg, info, on_start
        self.current_trial_id: int | None = None

    def __call__(self, trial) -> float:
        if self.on_start:
            self.on_start()
        self.current_trial_id = trial._trial_id
        dists = SearchSpace.from_dict(self.cfg.space).distributions()
        lr = trial.suggest_float("lr", dists["lr"].low, dists["lr"].high, log=True)
        reg = trial.suggest_float("reg", dists["reg"].low, dists["reg"].high, log=True)
        seed = int(trial.user_attrs.get("seed", trial.number))
        for key, value in (("worker", self.info.worker), ("host", self.info.host),
                           ("device", self.info.device), ("epochs", self.cfg.epochs)):
            trial.set_user_attr(key, value)

        import optuna

        from model.cnn import ModelConfig
        from model.train import TrainConfig, train, train_model

        args = (self.crops, ModelConfig(variant=self.cfg.model, lr=lr, reg=reg),
                TrainConfig(epochs=self.cfg.epochs, batch_size=self.cfg.batch_size, seed=seed,
                            progress=self.cfg.progress, data_seed=self.cfg.seed),
                pruning_hook([trial]) if self.cfg.pruning else None)
        # every trial runs on the worker's kept compiled model (no graph tracing after the
        # first); the final one takes its trained network out of it, to save
        result, model = train_model(*args) if self.cfg.stage == "final" else (train(*args), None)
        trial.set_user_attr("history", result.to_dict()["history"])
        if result.pruned:
            raise optuna.TrialPruned(f"pruned at epoch {len(result.history)}")
        if not result.ok:
            trial.set_user_attr("fail_reason", result.fail_reason)
            raise TrialFailed(result.fail_reason)
        trial.set_user_attr("val_loss", result.val_loss)
        if self.cfg.stage == "final":
            from study.final import write_final

            config = {"model": self.cfg.model, "lr": lr, "reg": reg, "epochs": self.cfg.epochs,
                      "batch_size": self.cfg.batch_size, "seed": seed,
                      "source_study": trial.user_attrs.get("source_study"),
                      "source_trial": trial.user_attrs.get("source_trial"),
                      "data_hash": self.crops.content_hash,
                      "data_source": self.crops.meta.get("source")}
            from study.artifacts import artifact_dir, publish_final_artifacts

            outputs = write_final(model, self.crops, result, config, self.cfg.out_dir)
            files = outputs.pop("files")
            for key, value in outputs.items():
                trial.set_user_attr(key, value)
            # the figures, viewable in optuna-dashboard started with --artifact-dir OUT/artifacts
            publish_final_artifacts(trial.study, trial._trial_id, [Path(f) for f in files],
                                    artifact_dir(self.cfg.out_dir.parent))
        return result.val_accuracy


def pruning_hook(trials: list):
    """model.train's on_epoch hook for these trials (one per slot): report each slot's
    val accuracy at step epoch - 1 (as Optuna's Keras callback did) and return the slots
    whose trial the pruner prunes."""
    def hook(epoch: int, shown: list) -> set[int]:
        prune = set()
        for slot, (trial, m) in enumerate(zip(trials, shown)):
            if m is not None:
                trial.report(m.val_accuracy, epoch - 1)
                if trial.should_prune():
                    prune.add(slot)
        return prune
    return hook
