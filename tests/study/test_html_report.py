"""study/html_report.py on real studies in a temporary SQLite file (no TensorFlow).

The browser test opens the page in headless Chromium and checks every image decoded.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.study.report_studies import COARSE, CONFUSION, FINE, build_run
from study.html_report import load_run, write_html

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
optuna.logging.set_verbosity(optuna.logging.WARNING)


class Page(HTMLParser):
    """Images, tables (as lists of rows of cell texts) and all text of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.tables, self.text = [], [], []
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'optuna.db'}"
    build_run(url, "demo")
    build_run(url, "half", stages=("coarse",))
    return url


@pytest.fixture(scope="module")
def page_path(sqlite_url, tmp_path_factory) -> Path:
    storage = optuna.storages.RDBStorage(sqlite_url)  # as the CLI hands it over
    return write_html(storage, "demo", tmp_path_factory.mktemp("html"))


def _top_rows(table):
    assert table[0] == ["rank", "val accuracy", "lr", "reg", "trial"]
    return table[1:]


def test_page_embeds_every_plot_as_png(page_path):
    assert page_path.name == "demo.html"
    page = Page(page_path.read_text())
    # coarse: search + curves, fine: search + curves, final: loss, accuracy, confusion
    assert len(page.images) == 7
    for img in page.images:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
        assert img["alt"]
    assert "dashed: the fine study's ranges" in page.images[0]["alt"]
    assert not re.search(r'src="(?!data:)', page_path.read_text())  # nothing external


def test_top_tables_are_the_best_trials_in_order(sqlite_url, page_path):
    page = Page(page_path.read_text())
    tops = [t for t in page.tables if t and t[0] and t[0][0] == "rank"]
    assert len(tops) == 2
    for stage, table in zip(("coarse", "fine"), tops):
        study = optuna.load_study(study_name=f"demo-{stage}", storage=sqlite_url)
        done = sorted((t for t in study.trials if t.state == TrialState.COMPLETE),
                      key=lambda t: -t.value)
        rows = _top_rows(table)
        assert len(rows) == min(10, len(done))
        assert [int(r[4]) for r in rows] == [t.number for t in done[:10]]
        for r, t in zip(rows, done):
            assert float(r[1]) == pytest.approx(t.value, abs=5e-5)
            assert float(r[2]) == pytest.approx(t.params["lr"], rel=1e-2)
            assert float(r[3]) == pytest.approx(t.params["reg"], rel=1e-2)


def test_derived_ranges_failures_and_final_result(page_path):
    page = Page(page_path.read_text())
    cells = {r[0]: r[1] for t in page.tables for r in t if len(r) == 2}
    assert cells["parent"] == "demo-coarse" and cells["top-k"] == "10"
    assert cells["rule"] == "min-max of top-k"
    assert cells["test accuracy"] == "0.9125" and cells["test loss"] == "0.231"
    assert cells["source"] == "demo-fine trial #3"
    text = " ".join(page.text)
    assert f"{FINE['lr'][0]:.2e} .. {FINE['lr'][1]:.2e}" in text
    assert f"{COARSE['reg'][0]:.2e} .. {COARSE['reg'][1]:.2e}" in text
    assert "2 × loss became nan in epoch 1" in text  # the coarse fixture fails 2 trials
    (confusion,) = [t for t in page.tables if t[0][0] == "true \\ predicted"]
    assert [r[1:] for r in confusion[1:]] == [[str(v) for v in row] for row in CONFUSION]
    assert "not run yet" not in text


def test_missing_studies_say_not_run_yet(sqlite_url, tmp_path):
    studies = load_run(sqlite_url, "half")
    assert studies["coarse"] is not None and studies["fine"] is studies["final"] is None
    page = Page(write_html(studies, "half", tmp_path).read_text())
    assert " ".join(page.text).count("not run yet") == 2
    assert len(page.images) == 2 and "dashed" not in page.images[0]["alt"]

    nothing = Page(write_html(load_run(sqlite_url, "absent"), "absent", tmp_path).read_text())
    assert " ".join(nothing.text).count("not run yet") == 3 and not nothing.images


def _chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    else:
        if Path(CHROMIUM).is_file() or shutil.which(CHROMIUM):
            return sync_playwright
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: required, not skipped)")
    pytest.skip(reason)


@pytest.mark.slow
def test_page_renders_in_chromium(page_path):
    sync_playwright = _chromium()
    shot = ROOT / "test-artifacts" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(page_path.as_uri())
            tab.wait_for_load_state("load")
            sizes = tab.eval_on_selector_all(
                "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            title = tab.title()
            tab.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert title == "facehpo demo" and not errors
    assert len(sizes) == 7
    assert all(done and w > 400 and h > 300 for done, w, h in sizes), sizes
    assert shot.stat().st_size > 50_000
