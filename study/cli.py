"""facehpo's command line: parse, build a config, call one function.

Every failure prints one line on stderr (tracebacks with --debug), and nothing that
can fail imports TensorFlow before the input is checked. Exit codes: 0 done, 1 setup
failure (storage, data, study, output), 2 bad command line, 3 internal error, 4 the
`train` run diverged, 130 SIGINT, 143 SIGTERM.
Precedence everywhere: command-line flag > environment variable > default.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

EXIT_USAGE = 1      # setup failure: storage, data, study, output folder
EXIT_ARGS = 2       # bad command line (argparse)
EXIT_INTERNAL = 3   # a bug: rerun with --debug
EXIT_TRIAL_FAILED = 4  # `facehpo train`: the run diverged (NaN) or ran out of memory
EXIT_SANITY_FAILED = 5  # `facehpo sanity`: at least one check failed


def _data_path(path: str | None) -> str:
    """--data > FACEHPO_DATA > the built-in sample (built once, offline)."""
    path = path or os.environ.get("FACEHPO_DATA")
    if not path:
        from dataset.sample import ensure_sample

        path = ensure_sample()
    return str(path)


def _data(path: str | None):
    from dataset.archive import load_crops

    path = _data_path(path)
    crops = load_crops(path)
    if crops.is_sample:
        print(f"data: the BUILT-IN SAMPLE ({path}; scikit-image lfw_subset, not FDDB)", file=sys.stderr)
    return crops


def _data_meta(path: str | None) -> dict:
    from dataset.archive import read_meta

    return read_meta(_data_path(path))


def _storage_config(args):
    import optuna  # here, not in main: commands without a database start faster

    from study.storage import StorageConfig

    optuna.logging.set_verbosity(optuna.logging.DEBUG if args.debug else optuna.logging.WARNING)
    return StorageConfig.resolve(args.storage, args.heartbeat_interval, args.grace_period)


def _storage(args, create: bool = False):
    from study.storage import open_storage

    return open_storage(_storage_config(args), create=create)


def _out(args) -> Path:
    return Path(args.out or os.environ.get("FACEHPO_OUT") or "runs")


def _name(args) -> str:
    return args.name or os.environ.get("FACEHPO_NAME") or "facehpo"


def _device() -> str:
    from model.device import configure

    return configure()


def cmd_data_build(args) -> int:
    from dataset.crops import CropConfig, build_fddb

    crops = build_fddb(args.fddb, args.out, CropConfig(seed=args.seed), skip_bad=args.skip_bad,
                       progress=sys.stderr.isatty())  # no bar in logs: errors stay one line
    c = crops.meta["counts"]
    print(f"wrote {args.out}: train {c['train']}, val {c['val']}, test {c['test']} "
          f"({crops.meta['content_hash'][:19]})")
    return 0


def cmd_data_sample(args) -> int:
    from dataset.sample import build_sample

    crops = build_sample(args.out)
    print(f"wrote {args.out}: built-in sample, counts {crops.meta['counts']}")
    return 0


def cmd_train(args) -> int:
    crops = _data(args.data)  # before TensorFlow loads: bad data fails fast and quietly
    from model.cnn import ModelConfig
    from model.train import TrainConfig, train

    device = _device()
    result = train(crops, ModelConfig(variant=args.model, lr=args.lr, reg=args.reg),
                      TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                  progress=True))
    if not result.ok:
        print(f"training failed: {result.fail_reason}", file=sys.stderr)
        return EXIT_TRIAL_FAILED
    print(f"val_accuracy {result.val_accuracy:.4f}  val_loss {result.val_loss:.4f}  "
          f"({result.seconds:.1f}s on {device})")
    return 0


def cmd_sanity(args) -> int:
    import json

    crops = _data(args.data)  # before TensorFlow loads
    from model.sanity import SanitySettings, format_table, run_checks, to_json

    _device()
    settings = SanitySettings(samples=args.samples, overfit_epochs=args.overfit_epochs, seed=args.seed)
    progress = None if args.json else (
        lambda r: print(f"{'PASS' if r.passed else 'FAIL'}  {r.name}", file=sys.stderr, flush=True))
    results = run_checks(crops, args.model, settings, on_result=progress)
    print(json.dumps(to_json(results), indent=2) if args.json else format_table(results))
    return 0 if all(r.passed for r in results) else EXIT_SANITY_FAILED


def cmd_init(args) -> int:
    from study.stages import StageConfig, create_coarse

    cfg = StageConfig(_name(args), args.model, args.trials, args.epochs, args.seed, args.batch_size)
    meta = _data_meta(args.data)
    storage = _storage(args, create=True)
    _create_views(storage)
    study = create_coarse(storage, cfg, meta)
    print(f"study {study.study_name}: {len(study.trials)} trial(s) enqueued "
          f"({cfg.trials} x {cfg.epochs} epochs, seed {cfg.seed})")
    return 0


def _create_views(storage) -> None:
    from study.views import create_views

    create_views(storage.engine)


def cmd_db_views(args) -> int:
    _create_views(_storage(args))
    print("views created: facehpo_trials, facehpo_top, facehpo_best, facehpo_lineage, "
          "facehpo_final, facehpo_curves (see docs/sql.md)")
    return 0


def cmd_db_reader_role(args) -> int:
    from study.views import create_reader_role

    password = os.environ.get("FACEHPO_READER_PASSWORD")
    create_reader_role(_storage(args).engine, role=args.role, password=password)
    print(f"role {args.role} can now SELECT the facehpo_* views and nothing else"
          + ("" if password else " (no password set: FACEHPO_READER_PASSWORD)"))
    return 0


def cmd_fine(args) -> int:
    from study.space import NarrowRule
    from study.stages import StageConfig, create_fine

    storage = _storage(args)
    study = create_fine(storage, StageConfig(_name(args), 1, args.trials, args.epochs, args.seed),
                        NarrowRule(k=args.k))
    space = study.user_attrs["space"]
    print(f"study {study.study_name}: lr {space['lr']}, reg {space['reg']} (rule "
          f"{study.user_attrs['rule']}); {len(study.trials)} trial(s) enqueued")
    return 0


def _work(args, storage, study_name: str) -> int:
    from study import storage as db
    from study.worker import EXIT_SIGINT, EXIT_SIGTERM, WorkerConfig, check_data, run_worker

    study = db.load(storage, study_name)  # an unknown study fails before anything loads
    crops = _data(args.data)
    check_data(study, crops)  # before TensorFlow loads
    scfg = _storage_config(args)
    summary = run_worker(storage, crops, WorkerConfig(
        study=study_name, out_dir=_out(args), worker_id=args.worker_id or os.environ.get("FACEHPO_WORKER_ID"),
        pruner=args.pruner, epoch_progress=args.epoch_progress, reconnect_attempts=scfg.reconnect_attempts,
        reconnect_backoff=scfg.connect_backoff), device=_device())
    print(f"{summary.study}: this worker completed {summary.completed}, failed {summary.failed}, "
          f"pruned {summary.pruned}" + (f"; stopped by {summary.interrupted}" if summary.interrupted else ""),
          file=sys.stderr)
    if summary.interrupted:
        return EXIT_SIGTERM if summary.interrupted == "SIGTERM" else EXIT_SIGINT
    return 0


def cmd_worker(args) -> int:
    return _work(args, _storage(args), args.study)


def cmd_final(args) -> int:
    from study.results import study_report
    from study.stages import create_final

    storage = _storage(args)
    study = create_final(storage, _name(args), args.epochs)
    code = _work(args, storage, study.study_name)
    print(study_report(study))
    return code


def cmd_pipeline(args) -> int:
    from study.pipeline import PipelineConfig, run_pipeline
    from study.results import study_report
    from study.worker import EXIT_SIGINT, EXIT_SIGTERM

    cfg = PipelineConfig(name=_name(args), profile=args.profile, model=args.model, seed=args.seed,
                         out_dir=_out(args), epoch_progress=args.epoch_progress)
    crops = _data(args.data)
    storage = _storage(args, create=True)
    _create_views(storage)
    summaries = run_pipeline(storage, crops, cfg, device=_device())
    if summaries[-1].interrupted:
        return EXIT_SIGTERM if summaries[-1].interrupted == "SIGTERM" else EXIT_SIGINT
    from study import storage as db

    for s in summaries:
        print(study_report(db.load(storage, s.study), k=5), end="\n\n")
    return 0


def cmd_report(args) -> int:
    from study import storage as db
    from study.results import study_report

    storage = _storage(args)
    if args.study:
        print(study_report(db.load(storage, args.study)))
    if args.html:
        from study.html_report import write_html

        print(f"wrote {write_html(storage, _name(args), Path(args.html))}")
    if not args.study and not args.html:
        print("studies: " + (", ".join(db.study_names(storage)) or "none"))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the subcommand's parsers inherit it)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_ARGS)


def _sigterm(signum, frame):
    """SIGTERM outside a worker's trial loop: stop like Ctrl-C, exit 143."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(143)


def build_parser() -> argparse.ArgumentParser:
    def positive(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
        return value

    def positive_float(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    def nonneg_float(text: str) -> float:
        value = positive_float(text) if text.strip() not in ("0", "0.0") else 0.0
        return value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--storage", help="database URL (env FACEHPO_STORAGE; default sqlite:///facehpo.db)")
    db.add_argument("--heartbeat-interval", type=positive, help="seconds (env FACEHPO_HEARTBEAT_INTERVAL; 60)")
    db.add_argument("--grace-period", type=positive, help="seconds (env FACEHPO_GRACE_PERIOD; 300)")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", help="crop .npz file (env FACEHPO_DATA; default: the built-in sample)")
    name = argparse.ArgumentParser(add_help=False)
    name.add_argument("--name", help="run name: studies NAME-coarse, NAME-fine, NAME-final (env FACEHPO_NAME)")
    work = argparse.ArgumentParser(add_help=False)
    work.add_argument("--out", help="output folder (env FACEHPO_OUT; default runs)")
    work.add_argument("--worker-id", help="recorded on each trial (env FACEHPO_WORKER_ID; default host-pid)")
    work.add_argument("--pruner", choices=("none", "median"), default="none")
    work.add_argument("--epoch-progress", action="store_true", help="a line per epoch")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", type=int, choices=(1, 2), default=1, help="the report's Model 1 or 2")
    model.add_argument("--seed", type=int, default=0)

    p = _Parser(
        prog="facehpo", description="Hyperparameter search for the report's face / non-face CNN: "
        "Optuna studies (coarse -> fine -> final), workers, reports.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("data", help="build crop files").add_subparsers(dest="what", required=True)
    b = d.add_parser("build", parents=[common], help="FDDB -> face / non-face crops (.npz + .json)")
    b.add_argument("--fddb", required=True, help="FDDB root (FDDB-folds/, originalPics/)")
    b.add_argument("--out", required=True, help="output .npz")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--skip-bad", action="store_true", help="skip unreadable images and count them")
    b.set_defaults(func=cmd_data_build)
    s = d.add_parser("sample", parents=[common], help="write the built-in sample to a file")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_data_sample)

    t = sub.add_parser("train", parents=[common, data, model], help="train once and print val accuracy")
    t.add_argument("--lr", type=positive_float, required=True)
    t.add_argument("--reg", type=nonneg_float, required=True)
    t.add_argument("--epochs", type=positive, default=5)
    t.add_argument("--batch-size", type=positive, default=20)
    t.set_defaults(func=cmd_train)

    sa = sub.add_parser("sanity", parents=[common, data, model],
                        help="the report's babysitting checks: a pass/fail table (exit 5 if any fails)")
    sa.add_argument("--samples", type=positive, default=200, help="training crops for checks 1-3")
    sa.add_argument("--overfit-epochs", type=positive, default=200, help="epochs allowed to overfit 20 crops")
    sa.add_argument("--json", action="store_true", help="print the results as JSON")
    sa.set_defaults(func=cmd_sanity)

    i = sub.add_parser("init", parents=[common, db, data, name, model],
                       help="create tables, views and the coarse study; enqueue its trials")
    i.add_argument("--trials", type=positive, default=100)
    i.add_argument("--epochs", type=positive, default=5)
    i.add_argument("--batch-size", type=positive, default=20)
    i.set_defaults(func=cmd_init)

    w = sub.add_parser("worker", parents=[common, db, data, work], help="take WAITING trials until none is left")
    w.add_argument("--study", required=True, help="e.g. facehpo-coarse")
    w.set_defaults(func=cmd_worker)

    f = sub.add_parser("fine", parents=[common, db, name], help="narrow the ranges; create the fine study")
    f.add_argument("--k", type=positive, default=10, help="top-k coarse trials to narrow from")
    f.add_argument("--trials", type=positive, default=100)
    f.add_argument("--epochs", type=positive, default=20)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_fine)

    fi = sub.add_parser("final", parents=[common, db, data, name, work],
                        help="retrain the best fine trial and test it once")
    fi.add_argument("--epochs", type=positive, default=50)
    fi.set_defaults(func=cmd_final)

    pp = sub.add_parser("pipeline", parents=[common, db, data, name, model],
                        help="coarse -> fine -> final in this process")
    pp.add_argument("--profile", default="quick",
                    help="quick (minutes, default), seed (the report's budgets) or smoke (seconds)")
    pp.add_argument("--out", help="output folder (env FACEHPO_OUT; default runs)")
    pp.add_argument("--epoch-progress", action="store_true", help="a line per epoch")
    pp.set_defaults(func=cmd_pipeline)

    dbp = sub.add_parser("db", help="SQL views and the read-only role").add_subparsers(
        dest="what", required=True)
    v = dbp.add_parser("views", parents=[common, db], help="(re)create the facehpo_* views")
    v.set_defaults(func=cmd_db_views)
    rr = dbp.add_parser("reader-role", parents=[common, db],
                        help="create a role that can only SELECT the views (PostgreSQL)")
    rr.add_argument("--role", default="facehpo_reader")
    rr.set_defaults(func=cmd_db_reader_role)

    r = sub.add_parser("report", parents=[common, db, name], help="top-10 table; --html for a page")
    r.add_argument("--study")
    r.add_argument("--html", metavar="DIR")
    r.set_defaults(func=cmd_report)
    return p


def _known_errors() -> tuple[type[BaseException], ...]:
    from dataset.errors import DataError
    from study.errors import SetupError

    errors: list[type[BaseException]] = [SetupError, DataError]
    if "sqlalchemy.exc" in sys.modules:  # no database touched, no database error
        errors.append(sys.modules["sqlalchemy.exc"].SQLAlchemyError)
    if "model.errors" in sys.modules:
        errors.append(sys.modules["model.errors"].ModelError)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    signal.signal(signal.SIGTERM, _sigterm)  # the worker installs its own while it runs
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, _known_errors()):
            print(f"facehpo: error: {text}", file=sys.stderr)
            return EXIT_USAGE
        print(f"facehpo: internal error: {type(e).__name__}: {text} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
