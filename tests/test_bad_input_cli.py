"""Malformed input through the real `facehpo` command line: FDDB files, arguments and
environment. Every case: a non-zero exit, exactly one line on stderr, nothing on stdout,
no traceback, no TensorFlow start-up chatter, and no file left behind.

The cases run as subprocesses in parallel once (module fixture); each parametrized test
then checks its own result."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from tests.study.cli_runner import facehpo

FOLDS, IMAGES, FACES = 10, 6, 20  # 1,200 faces declared: enough for the default 1,100 face crops
FACE = "20.000000 15.000000 0.000000 40.000000 40.000000  1"


def fake_fddb(root: Path) -> Path:
    """All ten folds, in FDDB's layout; each image 120x100 with 20 face lines."""
    rng = np.random.default_rng(0)
    (root / "FDDB-folds").mkdir(parents=True)
    for fold in range(1, FOLDS + 1):
        names = [f"2002/{fold:02d}/01/big/img_{k}" for k in range(IMAGES)]
        for name in names:
            f = root / "originalPics" / f"{name}.jpg"
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)).save(f, "JPEG")
        (root / "FDDB-folds" / f"FDDB-fold-{fold:02d}.txt").write_text("".join(f"{n}\n" for n in names))
        ellipses = "".join(f"{n}\n{FACES}\n" + f"{FACE}\n" * FACES for n in names)
        (root / "FDDB-folds" / f"FDDB-fold-{fold:02d}-ellipseList.txt").write_text(ellipses)
    return root


def _ellipses(root: Path, fold: int = 1) -> Path:
    return root / "FDDB-folds" / f"FDDB-fold-{fold:02d}-ellipseList.txt"


def _edit(root: Path, change: Callable[[list[bytes]], None]) -> None:
    """Apply `change` to the lines of every ellipse list."""
    for fold in range(1, FOLDS + 1):
        f = _ellipses(root, fold)
        lines = f.read_bytes().split(b"\n")
        change(lines)
        f.write_bytes(b"\n".join(lines))


def _faces(text: str):
    def change(lines):
        for i, line in enumerate(lines):
            if line == FACE.encode():
                lines[i] = text.encode()
    return change


def _line(no: int, text: bytes):
    def change(lines):
        lines[no - 1] = text
    return change


def _images(spoil: Callable[[Path], None]):
    def apply(root: Path, cwd: Path):
        for f in (root / "originalPics").rglob("*.jpg"):
            spoil(f)
    return apply


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple          # "{fddb}", "{out}" and "{cwd}" are filled in
    expect: str          # a substring of the one stderr line
    code: int = 1        # 1 setup / data failure, 2 bad command line
    env: dict = field(default_factory=dict)
    setup: Callable | None = None  # (fddb root, cwd) -> None


BUILD = ("data", "build", "--fddb", "{fddb}", "--out", "{out}")
PG_DOWN = "postgresql+psycopg2://facehpo:s3cret@127.0.0.1:9/facehpo"  # port 9 (discard): refused

CASES = [
    # FDDB files, through `facehpo data build`
    Case("fddb root missing", ("data", "build", "--fddb", "{cwd}/nope", "--out", "{out}"),
         "nope: FDDB root folder does not exist"),
    Case("fold list missing", BUILD, "FDDB-fold-03.txt: no such fold file",
         setup=lambda r, c: (r / "FDDB-folds" / "FDDB-fold-03.txt").unlink()),
    Case("ellipse list missing", BUILD, "FDDB-fold-07-ellipseList.txt: no such fold file",
         setup=lambda r, c: _ellipses(r, 7).unlink()),
    Case("truncated JPEG", BUILD, ": cannot decode image", setup=_images(_truncate)),
    Case("image is a PNG", BUILD, ": not a JPEG but PNG",
         setup=_images(lambda f: Image.new("RGB", (120, 100)).save(f, "PNG"))),
    Case("images missing", BUILD, ": no such image",
         setup=lambda r, c: shutil.rmtree(r / "originalPics")),
    Case("non-UTF-8 bytes", BUILD, "ellipseList.txt line 1: not UTF-8",
         setup=lambda r, c: _edit(r, _line(1, b"2002/01/01/big/img_\xff\xfe"))),
    Case("centre far outside", BUILD, "far outside the 120x100 image",
         setup=lambda r, c: _edit(r, _faces("20 15 0 4000 40 1"))),
    Case("absurd radius", BUILD, "radius 90000 absurd",
         setup=lambda r, c: _edit(r, _faces("90000 15 0 40 40 1"))),
    Case("NaN radius", BUILD, "non-finite", setup=lambda r, c: _edit(r, _faces("nan 15 0 40 40 1"))),
    Case("negative radius", BUILD, "radius not positive",
         setup=lambda r, c: _edit(r, _faces("-20 15 0 40 40 1"))),
    Case("count says more faces", BUILD, f"count says {FACES + 1} faces, but face lines stop after {FACES}",
         setup=lambda r, c: _edit(r, _line(2, str(FACES + 1).encode()))),
    Case("count not a number", BUILD, "line 2: expected a face count",
         setup=lambda r, c: _edit(r, _line(2, b"twenty"))),
    Case("face line of 5 fields", BUILD, "line 3: face line has 5 fields",
         setup=lambda r, c: _edit(r, _line(3, b"20 15 0 40 40"))),
    Case("path leaves originalPics", BUILD, "leaves originalPics/",
         setup=lambda r, c: _edit(r, _line(1, b"../../etc/passwd"))),
    Case("output not .npz", ("data", "build", "--fddb", "{fddb}", "--out", "{cwd}/out/crops.txt"),
         "output must be an .npz file"),
    Case("output folder under a regular file",
         ("data", "build", "--fddb", "{fddb}", "--out", "{cwd}/plain/crops.npz"),
         "output must be an .npz file in an existing folder",
         setup=lambda r, c: (c / "plain").write_text("a file, not a folder")),
    # command-line arguments
    Case("negative epochs", ("train", "--lr", "1e-3", "--reg", "0", "--epochs", "-3"),
         "argument --epochs: must be at least 1, got -3", code=2),
    Case("zero epochs", ("init", "--epochs", "0"), "argument --epochs: must be at least 1, got 0", code=2),
    Case("zero trials", ("init", "--trials", "0"), "argument --trials: must be at least 1", code=2),
    Case("negative learning rate", ("train", "--lr", "-0.1", "--reg", "0"), "must be > 0", code=2),
    Case("unknown model", ("train", "--model", "3", "--lr", "1e-3", "--reg", "0"),
         "argument --model: invalid choice: 3", code=2),
    Case("unknown profile", ("pipeline", "--profile", "huge"), "argument --profile: invalid choice: 'huge'", code=2),
    Case("unknown command", ("tune",), "invalid choice: 'tune'", code=2),
    Case("study not found", ("report", "--study", "nope", "--storage", "sqlite:///{cwd}/facehpo.db"),
         "no study named 'nope'", setup=lambda r, c: _study_db(c)),
    Case("worker on unknown study", ("worker", "--study", "nope", "--storage",
                                     "sqlite:///{cwd}/facehpo.db"),
         "no study named 'nope'", setup=lambda r, c: _study_db(c)),
    Case("malformed storage URL", ("report", "--storage", "postgres ql://x"), "malformed storage URL"),
    Case("unsupported storage", ("report", "--storage", "mongodb://127.0.0.1/x"), "unsupported storage"),
    Case("no database file", ("report", "--storage", "sqlite:///{cwd}/missing.db"),
         "no database file", ),
    # environment
    Case("heartbeat not a number", ("report",), "FACEHPO_HEARTBEAT_INTERVAL='abc' is not an integer",
         env={"FACEHPO_HEARTBEAT_INTERVAL": "abc"}),
    Case("grace below heartbeat", ("report",), "need interval >= 1 and grace > interval",
         env={"FACEHPO_GRACE_PERIOD": "30"}),
    Case("connect attempts zero", ("report",), "need attempts >= 1",
         env={"FACEHPO_CONNECT_ATTEMPTS": "0"}),
    Case("data file missing", ("init",), "missing.npz: no such crop file",
         env={"FACEHPO_DATA": "{cwd}/missing.npz"}),
    Case("data file not a crop file", ("train", "--lr", "1e-3", "--reg", "0"), "not a facehpo crop file",
         env={"FACEHPO_DATA": "{cwd}/junk.npz"}, setup=lambda r, c: _junk_crops(c)),
    Case("storage unreachable", ("report",), "cannot open the study database "
         "postgresql+psycopg2://facehpo:***@127.0.0.1:9/facehpo: connection to server",
         env={"FACEHPO_STORAGE": PG_DOWN, "FACEHPO_CONNECT_ATTEMPTS": "1"}),
]


def _study_db(cwd: Path) -> None:
    from study import storage as db
    from study.stages import StageConfig, create_coarse

    s = db.open_storage(db.StorageConfig(url=f"sqlite:///{cwd}/facehpo.db"), create=True)
    create_coarse(s, StageConfig(name="x", trials=1, epochs=1), {"content_hash": "sha256:0", "source": "t"})
    s.engine.dispose()


def _junk_crops(cwd: Path) -> None:
    (cwd / "junk.npz").write_bytes(b"PK not really a zip")
    (cwd / "junk.json").write_text('{"content_hash": "sha256:0"}')


def _files(cwd: Path) -> set[str]:
    return {str(p.relative_to(cwd)) for p in cwd.rglob("*")}


def _run(case: Case, base: Path):
    root, cwd = base / case.id / "fddb", base / case.id / "cwd"
    fake_fddb(root)
    (cwd / "out").mkdir(parents=True)
    if case.setup:
        case.setup(root, cwd)
    fill = {"fddb": root, "out": cwd / "out" / "crops.npz", "cwd": cwd}
    before = _files(cwd)
    env = {k: v.format(**fill) for k, v in case.env.items()}
    r = facehpo(*(str(a).format(**fill) for a in case.args), cwd=cwd, timeout=300,
                FACEHPO_HOME=base / "home", **env)
    return r, before, _files(cwd)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("badcli")
    from dataset.sample import build_sample

    (base / "home").mkdir()
    build_sample(base / "home" / "sample.npz")  # so no case builds it
    with ThreadPoolExecutor(4) as pool:
        return dict(zip((c.id for c in CASES), pool.map(lambda c: _run(c, base), CASES)))


def test_at_least_twenty_cases():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_nonzero_and_leaves_nothing(case, results):
    r, before, after = results[case.id]
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert case.expect in lines[0] and lines[0].startswith("facehpo"), lines[0]
    assert r.returncode == case.code and r.stdout == ""
    assert "Traceback" not in r.stderr and "s3cret" not in r.stderr
    assert after == before  # no partial output, no database, no temp file
