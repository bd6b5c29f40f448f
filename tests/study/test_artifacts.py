"""study/artifacts.py against Optuna's own artifact API, in a temporary SQLite file."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.distributions import FloatDistribution
from optuna_dashboard import get_note

from study.artifacts import artifact_dir, final_note, publish_final_artifacts
from study.errors import SetupError

optuna.logging.set_verbosity(optuna.logging.WARNING)
ATTRS = {"test_accuracy": 0.9125, "test_loss": 0.25, "confusion": [[37, 3], [4, 36]],
         "source_study": "run-fine", "source_trial": 3}


@pytest.fixture
def running(tmp_path):
    study = optuna.create_study(study_name="run-final", storage=f"sqlite:///{tmp_path}/a.db",
                                direction="maximize")
    study.enqueue_trial({"lr": 5e-5, "reg": 0.01})
    t = study.ask({"lr": FloatDistribution(1e-6, 1e-3, log=True),
                   "reg": FloatDistribution(1e-5, 1e5, log=True)})
    for k, v in ATTRS.items():
        t.set_user_attr(k, v)
    return study, t


@pytest.fixture
def files(tmp_path):
    out = []
    for name, data in (("final_confusion.png", b"\x89PNG one"), ("final.json", b'{"a": 1}')):
        (tmp_path / name).write_bytes(data)
        out.append(tmp_path / name)
    return out


def test_running_trial_gets_artifacts_and_note(running, files, tmp_path):
    study, t = running
    ids = publish_final_artifacts(t, files, artifact_dir(tmp_path / "out"))
    study.tell(t, 0.875)
    frozen = study.trials[0]
    metas = get_all_artifact_meta(frozen, storage=t.storage)
    assert sorted((m.artifact_id, m.filename) for m in metas) == sorted(
        zip(ids, ["final_confusion.png", "final.json"]))
    assert {m.filename: m.mimetype for m in metas} == {
        "final_confusion.png": "image/png", "final.json": "application/json"}
    for artifact_id, f in zip(ids, files):  # the store holds the bytes under the id
        assert (tmp_path / "out" / "artifacts" / artifact_id).read_bytes() == f.read_bytes()
    assert get_all_artifact_meta(study) == []
    note = get_note(t)
    assert "test accuracy: 0.9125" in note and "`final_confusion.png`" in note


def test_missing_file_uploads_nothing(running, files, tmp_path):
    study, t = running
    with pytest.raises(SetupError, match="nosuch.png"):
        publish_final_artifacts(t, [*files, tmp_path / "nosuch.png"], tmp_path / "art")
    assert get_all_artifact_meta(t) == []
    assert not (tmp_path / "art").exists()


def test_final_note_reads_the_design_attributes(running):
    study, t = running
    study.tell(t, 0.875)
    note = final_note(study.trials[0], ["a.png"])
    assert note.splitlines()[0] == "## Final run (trial 0)"
    assert "Configuration of trial 3 of `run-fine`: lr = 5e-05, reg = 0.01" in note
    assert "- validation accuracy: 0.8750" in note and "- test loss: 0.2500" in note
    assert "| non-face | 37 | 3 |" in note and "| face | 4 | 36 |" in note
    assert note.rstrip().endswith("Figures (see Artifacts): `a.png`")
    bare = final_note(optuna.trial.create_trial(value=0.5, state=optuna.trial.TrialState.COMPLETE))
    assert "test accuracy" not in bare and "| face |" not in bare


def test_artifact_dir_is_under_the_output_folder():
    assert artifact_dir("/out") == Path("/out/artifacts")
