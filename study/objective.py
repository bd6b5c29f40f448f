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
        """One trial alone (K = 1): its value, or TrialFailed / TrialPruned."""
        model_cfg, chosen = self._prepare(trial, 0, 1)
        result, model = self.fit(self.crops, model_cfg, self._train_cfg(chosen["seed"]),
                                 pruning_hook([trial]) if self.cfg.pruning else None)
        value, state = self._record(trial, result)
        if state == "pruned":
            import optuna

            raise optuna.TrialPruned(f"pruned at epoch {len(result.history)}")
        if state == "failed":
            raise TrialFailed(result.fail_reason)
        self.finish(trial, result, model, chosen)
        return value

    def run_pack(self, trials: list, check=None) -> list[tuple[float | None, str]]:
        """Search trials trained together as one packed model (model.train.train_pack):
        (value, "complete" | "failed" | "pruned") per trial. Each trial's per-epoch val
        accuracy is reported to it; `check()` runs at the end of every epoch (the worker's
        signal check) and anything it raises passes through with every trial still RUNNING."""
        from model.train import train_pack

        prepared = [self._prepare(t, slot, len(trials)) for slot, t in enumerate(trials)]
        hook = pruning_hook(trials, check, prune=self.cfg.pruning)
        results = train_pack(self.crops, [(m, c["seed"]) for m, c in prepared],
                             self._train_cfg(0), hook)
        return [self._record(t, r) for t, r in zip(trials, results)]

    def _prepare(self, trial, slot: int, size: int):
        """Suggest lr and reg (the enqueued values), record who trains it: (ModelConfig, chosen)."""
        from model.cnn import ModelConfig

        dists = SearchSpace.from_dict(self.cfg.space).distributions()
        lr = trial.suggest_float("lr", dists["lr"].low, dists["lr"].high, log=True)
        reg = trial.suggest_float("reg", dists["reg"].low, dists["reg"].high, log=True)
        seed = int(trial.user_attrs.get("seed", trial.number))
        for key, value in (("worker", self.info.worker), ("host", self.info.host),
                           ("device", self.info.device), ("epochs", self.cfg.epochs),
                           ("pack_size", size), ("pack_slot", slot)):
            trial.set_user_attr(key, value)
        return ModelConfig(variant=self.cfg.model, lr=lr, reg=reg), {"lr": lr, "reg": reg, "seed": seed}

    def _train_cfg(self, seed: int):
        from model.train import TrainConfig

        return TrainConfig(epochs=self.cfg.epochs, batch_size=self.cfg.batch_size, seed=seed,
                           progress=self.cfg.progress, data_seed=self.cfg.seed)

    def _record(self, trial, result) -> tuple[float | None, str]:
        trial.set_user_attr("history", result.to_dict()["history"])
        if result.pruned:
            return None, "pruned"
        if not result.ok:
            trial.set_user_attr("fail_reason", result.fail_reason)
            return None, "failed"
        trial.set_user_attr("val_loss", result.val_loss)
        return result.val_accuracy, "complete"

    def fit(self, crops, model_cfg, train_cfg, on_epoch):
        """(TrainResult, the model or None): every trial runs on the worker's kept compiled
        model (no graph tracing after the first); search trials keep no model."""
        from model.train import train

        return train(crops, model_cfg, train_cfg, on_epoch), None

    def finish(self, trial, result, model, chosen: dict) -> None:
        """After a successful training; the final stage saves and publishes here."""


def pruning_hook(trials: list, check=None, prune: bool = True):
    """model.train's on_epoch hook for these trials (one per slot): each slot's epoch end
    goes through optuna_integration's KerasPruningCallback of its own trial, which reports
    the val accuracy at step epoch - 1 and raises TrialPruned when the study's pruner says
    so; the hook returns those slots (a pack trains on: only they stop). With prune=False
    it only reports. `check()` runs first."""
    import optuna
    from optuna_integration.keras import KerasPruningCallback  # imports Keras: lazily

    callbacks = [KerasPruningCallback(trial, "val_accuracy") for trial in trials]

    def hook(epoch: int, shown: list) -> set[int]:
        if check is not None:
            check()
        stop = set()
        for slot, (trial, callback, m) in enumerate(zip(trials, callbacks, shown)):
            if m is None:
                continue
            if not prune:
                trial.report(m.val_accuracy, epoch - 1)
                continue
            try:
                callback.on_epoch_end(epoch - 1, {"val_accuracy": m.val_accuracy})
            except optuna.TrialPruned:
                stop.add(slot)
        return stop
    return hook
