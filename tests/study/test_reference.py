"""docs/cli.md is generated from the parser: it fails here as soon as it drifts."""
from __future__ import annotations

import re
from pathlib import Path

from study.reference import render

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cli.md"


def test_the_reference_is_what_the_parser_says():
    assert DOC.read_text() == render(), "docs/cli.md is stale: python -m study.reference > docs/cli.md"


def test_every_environment_variable_read_anywhere_is_in_it():
    doc = DOC.read_text()
    read = set()
    for folder in ("study", "model", "dataset"):
        for f in (ROOT / folder).glob("*.py"):
            read |= set(re.findall(r"FACEHPO_[A-Z_]+[A-Z]", f.read_text()))
    read |= set(re.findall(r"FACEHPO_[A-Z_]+[A-Z]", (ROOT / "docker-compose.yml").read_text()))
    assert read and sorted(v for v in read if f"`{v}`" not in doc) == []


def test_what_was_undocumented_before_is_there():
    doc = DOC.read_text()
    for text in ("--pruner", "## facehpo init", "--batch-size", "--worker-id", "--epoch-progress",
                 "--heartbeat, --heartbeat-interval", "--grace, --grace-period", "{quick,smoke,seed}",
                 "{none,median,hyperband}", "## facehpo narrow", "--top, --k"):
        assert text in doc, text
