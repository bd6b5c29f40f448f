"""optuna-dashboard on a real PostgreSQL database, read by a real headless Chromium.

A coarse study (lr / reg, intermediate values per epoch, one failed trial) and a final
study whose figures go through study.artifacts.publish_final_artifacts are written with
Optuna's API; `optuna-dashboard URL --artifact-dir DIR` serves them; the browser checks
what a person would see. Screenshots: test-artifacts/dashboard.png, dashboard-final.png.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from study.artifacts import publish_final_artifacts
from study.plots import final_plots

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts"
DIST = {"lr": FloatDistribution(1e-6, 1e-3, log=True), "reg": FloatDistribution(1e-5, 1e5, log=True)}
# (lr, reg, validation accuracy per epoch); the last trial fails (NaN loss) after two epochs
COARSE = [(2e-4, 0.5, [0.55, 0.625, 0.75]), (1e-6, 300.0, [0.5, 0.5, 0.5]),
          (5e-5, 0.01, [0.6, 0.7, 0.8125]), (9e-4, 2.0, [0.5, 0.4375])]
FAIL_REASON = "loss became nan in epoch 3"
CONFUSION = [[37, 3], [4, 36]]  # [[tn, fp], [fn, tp]]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _trial(study: optuna.Study, lr: float, reg: float, curve: list[float]) -> optuna.Trial:
    """A running trial with fixed lr / reg that has reported `curve` (step = epoch)."""
    study.enqueue_trial({"lr": lr, "reg": reg})
    t = study.ask(DIST)
    t.set_user_attr("worker", "test-worker")
    for step, acc in enumerate(curve):
        t.report(acc, step)
    return t


def _coarse(url: str) -> optuna.Study:
    study = optuna.create_study(study_name="dash-coarse", storage=url, direction="maximize")
    study.set_user_attr("stage", "coarse")
    for i, (lr, reg, curve) in enumerate(COARSE):
        t = _trial(study, lr, reg, curve)
        if i == len(COARSE) - 1:
            t.set_user_attr("fail_reason", FAIL_REASON)
            study.tell(t, state=TrialState.FAIL)
        else:
            study.tell(t, curve[-1])
    return study


def _final(url: str, out: Path) -> tuple[optuna.Study, list[Path]]:
    """The final stage's shape: figures written and published while the trial runs."""
    study = optuna.create_study(study_name="dash-final", storage=url, direction="maximize")
    study.set_user_attr("stage", "final")
    curve = [0.7, 0.8, 0.875]
    t = _trial(study, 5e-5, 0.01, curve)
    history = [{"epoch": e, "loss": 1.0 - a, "accuracy": a, "val_loss": 1.1 - a, "val_accuracy": a,
                "seconds": 1.0} for e, a in enumerate(curve)]
    for key, value in {"test_accuracy": 0.9125, "test_loss": 0.25, "confusion": CONFUSION,
                       "source_study": "dash-fine", "source_trial": 3}.items():
        t.set_user_attr(key, value)
    files = final_plots(history, CONFUSION, out)
    publish_final_artifacts(t, files, out / "artifacts")
    study.tell(t, curve[-1])
    return study, files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


@pytest.fixture
def dashboard(fresh_pg, tmp_path):
    """(base URL, {study name: id}, final figures) with optuna-dashboard serving fresh_pg."""
    coarse = _coarse(fresh_pg)
    final, files = _final(fresh_pg, tmp_path)
    exe = Path(sys.executable).with_name("optuna-dashboard")
    exe = str(exe) if exe.exists() else shutil.which("optuna-dashboard")
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen([exe, fresh_pg, "--host", "127.0.0.1", "--port", str(port),
                             "--artifact-dir", str(tmp_path / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = _get_json(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not serve: {(tmp_path / 'dashboard.log').read_text()[-800:]}")
                time.sleep(0.5)
        ids = {s["study_name"]: s["study_id"] for s in studies}
        assert set(ids) == {coarse.study_name, final.study_name}
        yield base, ids, files
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _text(page, url: str, expect: str) -> str:
    page.goto(url)
    page.get_by_text(expect, exact=False).first.wait_for(timeout=20_000)  # rendered, visible
    return page.inner_text("body")


def test_dashboard_shows_studies_trials_and_curves(dashboard, chromium):
    base, ids, _ = dashboard
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    home = _text(page, f"{base}/dashboard", "dash-coarse")
    assert "dash-final" in home

    cid = ids["dash-coarse"]
    trials = _text(page, f"{base}/dashboard/studies/{cid}/trials", f"{len(COARSE)} Trials")
    assert f"{len(COARSE)} Trials" in trials
    assert trials.count("Complete") >= 3 and "Fail" in trials

    best = 2  # the highest last value
    lr, reg, curve = COARSE[best]
    detail = _text(page, f"{base}/dashboard/studies/{cid}/trials?numbers={best}", f"lr {lr!r}")
    for step, acc in enumerate(curve):
        assert f"{step} {acc!r}" in detail, f"intermediate value {step}: {acc} not shown"
    assert f"lr {lr!r}" in detail and f"reg {reg!r}" in detail
    assert "Best Trial" in detail
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)

    failed = _text(page, f"{base}/dashboard/studies/{cid}/trials?numbers={len(COARSE) - 1}", FAIL_REASON)
    assert "0 0.5" in failed and "1 0.4375" in failed
    assert not errors, errors


def test_dashboard_shows_final_artifacts_and_note(dashboard, chromium):
    base, ids, files = dashboard
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    detail = _text(page, f"{base}/dashboard/studies/{ids['dash-final']}/trials?numbers=0", "test accuracy:")
    assert "test accuracy: 0.9125" in detail and "Final run (trial 0)" in detail
    (tn, fp), (fn, tp) = CONFUSION
    assert f"non-face\t{tn}\t{fp}" in detail and f"face\t{fn}\t{tp}" in detail
    page.wait_for_function(
        f"document.querySelectorAll('img[src*=\"/artifacts/\"]').length >= {len(files)}", timeout=20_000)
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=20_000)
    images = page.eval_on_selector_all(
        "img[src*='/artifacts/']", "imgs => imgs.map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
    assert sorted(alt for alt, _, _ in images) == sorted(f.name for f in files)
    assert all(w > 100 and h > 100 for _, w, h in images), images
    page.get_by_text("Artifacts", exact=True).last.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "dashboard-final.png"), full_page=True)
