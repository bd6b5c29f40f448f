"""dataset/atomic.py: a file is whole or absent, never half written."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dataset.atomic import atomic_write


def test_writes_through_a_temp_file_with_the_same_suffix_readable_by_others(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        Path(tmp).write_text("new")

    path = atomic_write(tmp_path / "final.json", write)
    assert path.read_text() == "new"
    assert seen[0].endswith(".json") and Path(seen[0]).parent == tmp_path and seen[0] != str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"]


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "crops.npz"
    path.write_text("old")

    def half(tmp):
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, half)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops.npz"]


def test_an_interrupt_mid_write_leaves_no_file(tmp_path):
    def interrupted(tmp):
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "model.keras", interrupted)
    assert list(tmp_path.iterdir()) == []
