"""The final stage's trial and what it leaves behind: test metrics, the saved model,
plots and JSON, and the figures published for optuna-dashboard.

The test crops are used here once, after selection; never for choosing anything.
"""
from __future__ import annotations

import json
from pathlib import Path

from dataset.atomic import atomic_write
from study.errors import SetupError
from study.objective import Objective


def write_final(model, crops, result, config: dict, out_dir: Path) -> dict:
    """Evaluate on the test crops, save model + plots + JSON under `out_dir`.

    Returns what to record on the trial: test_accuracy, test_loss, confusion
    ([[tn, fp], [fn, tp]], rows = true class), output_dir, and the plot files.
    """
    from model.saving import save_model
    from model.train import evaluate
    from study.plots import final_plots

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SetupError(f"cannot create output folder {out_dir}: {e.strerror}") from None
    ev = evaluate(model, crops, "test")
    confusion = [list(row) for row in ev.confusion]
    history = result.to_dict()["history"]
    save_model(model, crops.mean, crops.std, out_dir / "model", config)
    plots = final_plots(history, confusion, out_dir)
    summary = {**config, "val_accuracy": result.val_accuracy, "val_loss": result.val_loss,
               "test_accuracy": ev.accuracy, "test_loss": ev.loss, "confusion": confusion,
               "confusion_normalized": [list(row) for row in ev.rates()], "history": history,
               "plots": [p.name for p in plots],
               "note": ("trained and tested on the BUILT-IN SAMPLE (scikit-image lfw_subset), not FDDB"
                        if crops.is_sample else "FDDB crops")}
    _write_json(out_dir / "final.json", summary)
    return {"test_accuracy": ev.accuracy, "test_loss": ev.loss, "confusion": confusion,
            "output_dir": str(out_dir.resolve()), "files": [str(p) for p in plots]}


def _write_json(path: Path, data: dict) -> None:
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))
    except OSError as e:
        raise SetupError(f"cannot write {path}: {e.strerror or e}") from None


class FinalObjective(Objective):
    """The final stage's one trial: a model of its own (saved, unlike the kept model of
    search trials), tested once, its files written and published while the trial runs."""

    def fit(self, crops, model_cfg, train_cfg, on_epoch):
        """The trained network is taken out of the kept pack, to save."""
        from model.train import train_model

        return train_model(crops, model_cfg, train_cfg, on_epoch)

    def finish(self, trial, result, model, chosen: dict) -> None:
        from study.artifacts import artifact_dir, publish_final_artifacts

        config = {"model": self.cfg.model, "lr": chosen["lr"], "reg": chosen["reg"],
                  "epochs": self.cfg.epochs, "batch_size": self.cfg.batch_size, "seed": chosen["seed"],
                  "source_study": trial.user_attrs.get("source_study"),
                  "source_trial": trial.user_attrs.get("source_trial"),
                  "data_hash": self.crops.content_hash, "data_source": self.crops.meta.get("source")}
        outputs = write_final(model, self.crops, result, config, self.cfg.out_dir)
        files = outputs.pop("files")
        for key, value in outputs.items():
            trial.set_user_attr(key, value)
        # the figures, viewable in optuna-dashboard started with --artifact-dir OUT/artifacts
        publish_final_artifacts(getattr(trial, "trial", trial),  # Optuna's Trial, unwrapped
                                [Path(f) for f in files], artifact_dir(self.cfg.out_dir.parent))


def objective_class(stage: str) -> type[Objective]:
    return FinalObjective if stage == "final" else Objective

