"""facehpo's argument parser, built from the configuration dataclasses.

Each flag that sets a configuration field is declared once, on the field (study/options.py);
`build_parser` adds it to every command that needs that configuration, and the command
functions (study/cli.py) build the dataclass with `options.resolve`: flag > environment
variable > default. A command's own defaults (`fine --epochs 20`) travel on the parser as
`args.defaults`, so --help and the resolved value cannot differ. docs/cli.md is generated
from this parser (`python -m study.cli_reference`).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from study.coordinator import PipelineConfig
from study.options import add_flags, option, options, positive, value
from study.stages import StageConfig
from study.storage import StorageConfig
from study.worker import WorkerConfig

EXIT_ARGS = 2  # bad command line (argparse)

# `facehpo fine` / `final`: other budgets than `init`'s (the report's defaults)
FINE_DEFAULTS = {"trials": 100, "epochs": 20}
FINAL_DEFAULTS = {"epochs": 50}


@dataclass(frozen=True)
class DataChoice:
    path: str | None = option(None, flag="--data", env="FACEHPO_DATA", kind="str", metavar="FILE",
                              help="crop .npz file (default: the built-in sample)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the subcommand's parsers inherit it)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_ARGS)


def _number(text: str, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 or (allow_zero and value == 0)):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _parent(*configs, **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    for cls in configs:
        add_flags(p, cls, **kw)
    return p


def _commands(p: argparse.ArgumentParser):
    return p.add_subparsers(dest="command", required=True, metavar="COMMAND")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    db = _parent(StorageConfig)
    data = _parent(DataChoice)
    name = _parent(StageConfig, only=("name",))
    work = _parent(WorkerConfig, skip=("study",))
    model = argparse.ArgumentParser(add_help=False)  # train / sanity: model/ has no study options
    model.add_argument("--model", type=int, choices=(1, 2), default=1, help="the report's Model 1 or 2")
    model.add_argument("--seed", type=int, default=0, metavar="S", help="weights, dropout and data order")

    p = _Parser(prog="facehpo", description="Hyperparameter search for the report's face / non-face "
                "CNN: Optuna studies (coarse -> fine -> final), workers, reports. Precedence for "
                "every setting: command-line flag > environment variable > default.")
    sub = _commands(p)

    d = sub.add_parser("data", help="build crop files").add_subparsers(dest="what", required=True)
    b = d.add_parser("build", parents=[common], help="FDDB -> face / non-face crops (.npz + .json)")
    b.add_argument("--fddb", required=True, metavar="DIR", help="FDDB root (FDDB-folds/, originalPics/)")
    b.add_argument("--out", required=True, metavar="FILE", help="output .npz")
    b.add_argument("--seed", type=int, default=0, metavar="S", help="the split of images and the non-face windows")
    b.add_argument("--skip-bad", action="store_true", help="skip unreadable images and count them")
    b.set_defaults(func="data_build")
    s = d.add_parser("sample", parents=[common], help="write the built-in sample to a file")
    s.add_argument("--out", required=True, metavar="FILE", help="output .npz")
    s.set_defaults(func="data_sample")

    t = sub.add_parser("train", parents=[common, data, model], help="train once and print val accuracy")
    t.add_argument("--lr", type=lambda x: _number(x, False), required=True, metavar="X", help="learning rate (> 0)")
    t.add_argument("--reg", type=lambda x: _number(x, True), required=True, metavar="Y",
                   help="L2 regularization strength (>= 0)")
    t.add_argument("--epochs", type=positive, default=5, metavar="E")
    t.add_argument("--batch-size", type=positive, default=20, metavar="B")
    t.set_defaults(func="train")

    sa = sub.add_parser("sanity", parents=[common, data, model],
                        help="the report's babysitting checks: a pass/fail table (exit 5 if any fails)")
    sa.add_argument("--samples", type=positive, default=200, help="training crops for checks 1-3")
    sa.add_argument("--overfit-epochs", type=positive, default=200, help="epochs allowed to overfit 20 crops")
    sa.add_argument("--json", action="store_true", help="print the results as JSON")
    sa.set_defaults(func="sanity")

    i = sub.add_parser("init", parents=[common, db, data, _parent(StageConfig)],
                       help="create tables, views and the study NAME-coarse; enqueue its N configurations")
    i.set_defaults(func="init", defaults={})

    w = sub.add_parser("worker", parents=[common, db, data, work],
                       help="take WAITING trials (drawing a tpe / gp study's next round) until the "
                       "budget is spent, then exit 0")
    add_flags(w, WorkerConfig, only=("study",), required=("study",))
    w.set_defaults(func="worker")

    n = sub.add_parser("narrow", parents=[common, db],
                       help="create a study from the top K of any finished STUDY and enqueue it")
    n.add_argument("--from", dest="source", required=True, metavar="STUDY",
                   help="the study to narrow: NAME-coarse, or a narrowed one (fine -> fine2 ...)")
    n.add_argument("--top", "--k", dest="k", type=positive, default=10, metavar="K",
                   help="narrow the ranges around its top K trials (default 10)")
    n.add_argument("--name", dest="study_name", metavar="STUDY",
                   help="the new study's name (default: RUN-fine, then RUN-fine2, RUN-fine3 ...)")
    add_flags(n, StageConfig, defaults=FINE_DEFAULTS, only=("trials", "epochs", "seed", "pruner", "sampler", "round_size"))
    n.set_defaults(func="narrow", defaults=FINE_DEFAULTS)

    f = sub.add_parser("fine", parents=[common, db, name],
                       help="narrow NAME-coarse into NAME-fine (narrow --from NAME-coarse)")
    f.add_argument("--top", "--k", dest="k", type=positive, default=10, metavar="K",
                   help="top K coarse trials to narrow from (default 10)")
    add_flags(f, StageConfig, defaults=FINE_DEFAULTS, only=("trials", "epochs", "seed", "pruner", "sampler", "round_size"))
    f.set_defaults(func="fine", defaults=FINE_DEFAULTS)

    fi = sub.add_parser("final", parents=[common, db, data, name, work],
                        help="retrain the best trial of a study (NAME-fine), test it once, store NAME-final")
    fi.add_argument("--from", dest="source", metavar="STUDY",
                    help="the study whose best trial to retrain (default NAME-fine; NAME: its run)")
    add_flags(fi, StageConfig, defaults=FINAL_DEFAULTS, only=("epochs",))
    fi.set_defaults(func="final", defaults=FINAL_DEFAULTS)

    pp = sub.add_parser("pipeline", parents=[common, db, data, _parent(PipelineConfig)],
                        help="coarse -> fine -> final in this process")
    pp.set_defaults(func="pipeline")

    dbp = sub.add_parser("db", help="SQL views and the read-only role").add_subparsers(
        dest="what", required=True)
    v = dbp.add_parser("views", parents=[common, db], help="(re)create the facehpo_* views")
    v.set_defaults(func="db_views")
    rr = dbp.add_parser("reader-role", parents=[common, db],
                        help="create a role that can only SELECT the views (PostgreSQL; password "
                        "from env FACEHPO_READER_PASSWORD)")
    rr.add_argument("--role", default="facehpo_reader", metavar="ROLE")
    rr.set_defaults(func="db_reader_role")

    de = sub.add_parser("delete", parents=[common, db],
                        help="delete a study and its trials (to re-create it with other settings)")
    de.add_argument("--study", required=True, metavar="STUDY")
    de.set_defaults(func="delete")

    r = sub.add_parser("report", parents=[common, db, name], help="top-10 table; --html for a page")
    r.add_argument("--study", metavar="STUDY", help="print this study's top-10 table")
    r.add_argument("--html", metavar="DIR", help="write one HTML page of run NAME into DIR")
    r.set_defaults(func="report")
    return p


CONFIGS = (StorageConfig, DataChoice, StageConfig, WorkerConfig, PipelineConfig)


def effective(args: argparse.Namespace) -> dict:
    """The parsed command line by argparse dest, its configuration settings resolved as
    its command will resolve them (flag > environment variable > default)."""
    out = {k: v for k, v in vars(args).items() if k != "defaults"}
    done = set()
    for cls in CONFIGS:
        for o in options(cls):
            if o.flag and hasattr(args, o.name) and o.name not in done:
                out[o.name] = value(o, args, getattr(args, "defaults", None))
                done.add(o.name)
    return out
