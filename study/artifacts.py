"""Show the final stage's results in optuna-dashboard: its figures as Optuna artifacts and
a Markdown note on the trial.

The files go into a FileSystemArtifactStore under `artifact_dir`; the dashboard lists and
displays them when started with `--artifact-dir` pointing at the same directory (in the
compose file: `/out/artifacts`, i.e. `artifact_dir(FACEHPO_OUT)`). Imports Optuna only.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from study.errors import SetupError

ARTIFACT_SUBDIR = "artifacts"


def artifact_dir(out: str | Path) -> Path:
    """Where the artifacts of a run whose outputs live in `out` go: `out/artifacts`."""
    return Path(out) / ARTIFACT_SUBDIR


def publish_final_artifacts(trial: optuna.Trial, files: Sequence[Path], artifact_dir: Path,
                            note: str | None = None) -> list[str]:
    """Upload `files` (PNG, CSV, JSON ...) as artifacts of the RUNNING `trial` (Optuna's
    live Trial, inside the objective) and save a Markdown note on it (by default
    `final_note` of the trial). Returns the artifact ids, in the order of `files`. A
    missing file is a SetupError, raised before anything is uploaded.
    """
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise SetupError(f"cannot publish missing file(s): {', '.join(missing)}")
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    ids = [upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=trial) for f in files]
    from optuna_dashboard import save_note  # only the publishing path needs the dashboard

    save_note(trial, note if note is not None else final_note(trial, [Path(f).name for f in files]))
    return ids


def final_note(trial: "optuna.Trial | optuna.trial.FrozenTrial", filenames: Sequence[str] = ()) -> str:
    """Markdown: test accuracy and loss, the confusion matrix, where the configuration
    came from, and the figures attached (from the trial's user attributes, see design.md)."""
    a = trial.user_attrs
    lines = [f"## Final run (trial {trial.number})", ""]
    if "source_study" in a:
        lines.append(f"Configuration of trial {a.get('source_trial')} of `{a['source_study']}`: "
                     + ", ".join(f"{k} = {v:.3g}" for k, v in sorted(trial.params.items())))
        lines.append("")
    value = getattr(trial, "value", None)  # a running Trial has none yet
    if value is not None:
        lines.append(f"- validation accuracy: {value:.4f}")
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        if key in a:
            lines.append(f"- {label}: {a[key]:.4f}")
    if "confusion" in a:
        (tn, fp), (fn, tp) = a["confusion"]
        lines += ["", "| true \\ predicted | non-face | face |", "|---|---|---|",
                  f"| non-face | {tn} | {fp} |", f"| face | {fn} | {tp} |"]
    if filenames:
        lines += ["", "Figures (see Artifacts): " + ", ".join(f"`{n}`" for n in filenames)]
    return "\n".join(lines) + "\n"
