"""The command-line block of the studies issue (issue 3, "Command-line surface"): every
line works exactly as written. Parsed in process (fast), then run end to end on
PostgreSQL on a tiny budget."""
from __future__ import annotations

import re

import pytest

from study.parser import build_parser, effective
from tests.study.cli_runner import error_lines, facehpo
from tests.study.live import by_state, tiny_crops, trials

BLOCK = """\
facehpo init     --storage URL [--name NAME] [--model 1|2] [--trials N] [--epochs E] [--seed S] [--data FILE]
facehpo worker   --storage URL --study STUDY [--data FILE] [--heartbeat SECONDS] [--grace SECONDS]
facehpo narrow   --storage URL --from STUDY [--top K] [--trials N] [--epochs E] [--seed S]
facehpo final    --storage URL --from STUDY [--epochs 50] [--data FILE] [--out DIR]
facehpo pipeline [--storage URL] [--profile quick|seed] [--model 1|2] [--data FILE] [--out DIR]
facehpo report   --storage URL --study STUDY
"""

# each placeholder's value here, and the setting it must end up as (field, value)
VALUES = {"URL": "sqlite:///x.db", "NAME": "blk", "1|2": "2", "N": "3", "E": "2", "S": "7",
          "FILE": "crops.npz", "STUDY": "blk-coarse", "SECONDS": "9", "K": "2", "50": "50",
          "DIR": "outdir", "quick|seed": "seed"}
SETTING = {"--storage": "url", "--name": "name", "--model": "model", "--trials": "trials",
           "--epochs": "epochs", "--seed": "seed", "--data": "path", "--study": "study",
           "--heartbeat": "heartbeat_interval", "--grace": "grace_period", "--from": "source",
           "--top": "k", "--out": "out_dir", "--profile": "profile"}


def lines(full: bool) -> list[list[str]]:
    """The block's lines as argv: with every optional flag (full) or only the required."""
    out = []
    for line in BLOCK.splitlines():
        text = re.sub(r"\[([^\]]*)\]", (lambda m: m.group(1)) if full else "", line)
        words = text.split()[1:]  # less "facehpo"
        out.append([VALUES.get(w, w) for w in words])
    return out


@pytest.mark.parametrize("argv", lines(full=True) + lines(full=False), ids=" ".join)
def test_every_line_of_the_block_parses_to_what_it_says(argv):
    args = build_parser().parse_args(argv)
    got = effective(args)
    for flag, value in zip(argv[1::2], argv[2::2]):
        field = SETTING[flag]
        assert str(got[field]) == value, f"{flag} {value}: parsed as {field} = {got[field]!r}"


@pytest.mark.parametrize("argv, words", [
    (["worker", "--storage", "u", "--study", "s", "--pruner", "median"], "unrecognized arguments: --pruner"),
    (["narrow", "--storage", "u"], "the following arguments are required: --from"),
    (["pipeline", "--profile", "huge"], "invalid choice: 'huge' (choose from 'quick', 'smoke', 'seed')"),
    (["init", "--pruner", "asha"], "invalid choice: 'asha' (choose from 'none', 'median', 'hyperband')"),
])
def test_what_the_block_does_not_allow_is_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_old_spellings_stay_aliases():
    parse = build_parser().parse_args
    old = effective(parse(["worker", "--study", "s", "--heartbeat-interval", "4", "--grace-period", "8"]))
    assert (old["heartbeat_interval"], old["grace_period"]) == (4, 8)
    assert effective(parse(["fine", "--k", "3"]))["k"] == 3 == effective(parse(["fine", "--top", "3"]))["k"]
    assert effective(parse(["narrow", "--from", "x", "--k", "4"]))["k"] == 4


def _run(argv, cwd, **env):
    r = facehpo(*argv, cwd=cwd, **env)
    assert r.returncode == 0, f"{' '.join(map(str, argv))}: {error_lines(r.stderr)[-3:]}"
    return r


@pytest.mark.postgres
@pytest.mark.slow
def test_every_line_of_the_block_runs_end_to_end_on_postgres(fresh_pg, tmp_path):
    tiny = tiny_crops(tmp_path)
    url, study = fresh_pg, "blk-coarse"
    given = {"URL": url, "NAME": "blk", "1|2": "1", "N": "4", "E": "1", "S": "3", "FILE": str(tiny),
             "STUDY": study, "SECONDS": "20", "K": "2", "50": "1", "DIR": str(tmp_path / "out"),
             "quick|seed": "quick"}
    init, worker, narrow, final, pipeline, report = [
        [given.get(w, w) for w in re.sub(r"[\[\]]", "", line).split()[1:]] for line in BLOCK.splitlines()]
    worker[worker.index("--heartbeat") + 1] = "2"  # heartbeat < grace
    _run(init, tmp_path)
    _run(worker, tmp_path)
    assert by_state(trials(url, study)) == {"COMPLETE": 4}
    _run(narrow, tmp_path)  # --from blk-coarse: creates blk-fine
    fine = trials(url, "blk-fine")
    assert len(fine) == 5 and by_state(fine) == {"WAITING": 5}
    _run([*worker[:3], "--study", "blk-fine", *worker[5:]], tmp_path)
    chained = [*narrow[:3], "--from", "blk-fine", *narrow[5:]]
    r = _run(chained, tmp_path)  # a fine study narrowed again: blk-fine2, lineage kept
    assert "study blk-fine2 (from blk-coarse -> blk-fine)" in r.stdout
    _run([*worker[:3], "--study", "blk-fine2", *worker[5:]], tmp_path)
    _run([*final[:3], "--from", "blk-fine2", *final[5:]], tmp_path)  # stores blk-final
    assert by_state(trials(url, "blk-final")) == {"COMPLETE": 1}
    assert (tmp_path / "out" / "blk-final" / "final.json").is_file()
    r = _run(report[:3] + ["--study", "blk-final"], tmp_path)
    assert "blk-fine2" in r.stdout
    _run(pipeline, tmp_path)  # NAME facehpo on the same database
    for stage in ("coarse", "fine", "final"):
        ts = trials(url, f"facehpo-{stage}")
        assert ts and set(by_state(ts)) == {"COMPLETE"}
    assert (tmp_path / "out" / "facehpo-final" / "final.json").is_file()
