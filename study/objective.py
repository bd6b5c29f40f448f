"""The only place that touches an Optuna trial: trial -> configs -> model.train -> value.

TensorFlow is imported lazily, inside the call, so the rest of `study` stays light.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

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
    """Callable for each search trial: suggest, train on the worker's kept compiled model
    (no graph tracing after the first trial), record, return the validation accuracy.
    The final stage's trial is study/final.py's FinalObjective."""

    def __init__(self, crops, cfg: ObjectiveConfig, info: WorkerInfo):
        self.crops, self.cfg, self.info = crops, cfg, info

    def __call__(self, trial) -> float:
        dists = SearchSpace.from_dict(self.cfg.space).distributions()
        lr = trial.suggest_float("lr", dists["lr"].low, dists["lr"].high, log=True)
        reg = trial.suggest_float("reg", dists["reg"].low, dists["reg"].high, log=True)
        seed = int(trial.user_attrs.get("seed", trial.number))
        for key, value in (("worker", self.info.worker), ("host", self.info.host),
                           ("device", self.info.device), ("epochs", self.cfg.epochs)):
            trial.set_user_attr(key, value)

        import optuna

        from model.cnn import ModelConfig
        from model.train import TrainConfig

        result, model = self.fit(self.crops, ModelConfig(variant=self.cfg.model, lr=lr, reg=reg),
                                 TrainConfig(epochs=self.cfg.epochs, batch_size=self.cfg.batch_size,
                                             seed=seed, progress=self.cfg.progress,
                                             data_seed=self.cfg.seed),
                                 pruning_hook([trial]) if self.cfg.pruning else None)
        trial.set_user_attr("history", result.to_dict()["history"])
        if result.pruned:
            raise optuna.TrialPruned(f"pruned at epoch {len(result.history)}")
        if not result.ok:
            trial.set_user_attr("fail_reason", result.fail_reason)
            raise TrialFailed(result.fail_reason)
        trial.set_user_attr("val_loss", result.val_loss)
        self.finish(trial, result, model, {"lr": lr, "reg": reg, "seed": seed})
        return result.val_accuracy

    def fit(self, crops, model_cfg, train_cfg, on_epoch):
        """(TrainResult, the model or None): every trial runs on the worker's kept compiled
        model (no graph tracing after the first); search trials keep no model."""
        from model.train import train

        return train(crops, model_cfg, train_cfg, on_epoch), None

    def finish(self, trial, result, model, chosen: dict) -> None:
        """After a successful training; the final stage saves and publishes here."""


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
