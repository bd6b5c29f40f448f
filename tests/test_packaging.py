"""The package builds quietly and ships its data: `pip install` on a fresh clone prints no
page of setuptools warnings, and the wheel holds the SQL the views are made from."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_builds_without_warnings_and_holds_the_sql(tmp_path):
    src = tmp_path / "src"  # a copy without build leftovers, as a fresh clone has
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
                           str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "BuildBackendWarning" not in done.stdout + done.stderr, done.stdout + done.stderr
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("facehpo-*.whl"))).namelist()
    assert "study/sql/views.sql" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
