"""facehpo's command line: parse, build a config, call one function.

Every failure prints one line on stderr (tracebacks with --debug), and nothing that
can fail imports TensorFlow before the input is checked. Exit codes: 0 done, 1 setup
failure (storage, data, study, output), 2 bad command line, 3 internal error, 4 the
`train` run diverged, 130 SIGINT, 143 SIGTERM.
Precedence everywhere: command-line flag > environment variable > default (the flags are
declared on the configuration dataclasses; study/parser.py builds the parser from them).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from study.coordinator import PipelineConfig
from study.options import resolve
from study.parser import DataChoice, build_parser
from study.stages import StageConfig
from study.storage import StorageConfig
from study.worker import WorkerConfig

EXIT_USAGE = 1      # setup failure: storage, data, study, output folder
EXIT_INTERNAL = 3   # a bug: rerun with --debug
EXIT_TRIAL_FAILED = 4  # `facehpo train`: the run diverged (NaN) or ran out of memory
EXIT_SANITY_FAILED = 5  # `facehpo sanity`: at least one check failed


def _data_path(args) -> str:
    """--data > FACEHPO_DATA > the built-in sample (built once, offline)."""
    path = resolve(DataChoice, args).path
    if not path:
        from dataset.sample import ensure_sample

        path = ensure_sample()
    return str(path)


def _data(args):
    from dataset.archive import load_crops

    path = _data_path(args)
    crops = load_crops(path)
    if crops.is_sample:
        print(f"data: the BUILT-IN SAMPLE ({path}; scikit-image lfw_subset, not FDDB)", file=sys.stderr)
    return crops


def _data_meta(args) -> dict:
    from dataset.archive import read_meta

    return read_meta(_data_path(args))


def _storage_config(args) -> StorageConfig:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.DEBUG if args.debug else optuna.logging.WARNING)
    return resolve(StorageConfig, args)


def _storage(args, create: bool = False):
    from study.storage import open_storage

    return open_storage(_storage_config(args), create=create)


def _stage(args, **given) -> StageConfig:
    return resolve(StageConfig, args, getattr(args, "defaults", None), **given)


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
    crops = _data(args)  # before TensorFlow loads: bad data fails fast and quietly
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

    crops = _data(args)  # before TensorFlow loads
    from model.sanity import SanitySettings, format_table, run_checks, to_json

    _device()
    settings = SanitySettings(samples=args.samples, overfit_epochs=args.overfit_epochs, seed=args.seed)
    progress = None if args.json else (
        lambda r: print(f"{'PASS' if r.passed else 'FAIL'}  {r.name}", file=sys.stderr, flush=True))
    results = run_checks(crops, args.model, settings, on_result=progress)
    print(json.dumps(to_json(results), indent=2) if args.json else format_table(results))
    return 0 if all(r.passed for r in results) else EXIT_SANITY_FAILED


def _drawn(study) -> str:
    """What `init` / `fine` say about an adaptive study: who draws its later rounds."""
    from study.coordinator import drawn

    how = drawn(study)
    return how + (", the workers draw the later rounds" if how else "")


def cmd_init(args) -> int:
    from study.stages import create_coarse

    cfg = _stage(args)
    meta = _data_meta(args)
    storage = _storage(args, create=True)
    _create_views(storage)
    study = create_coarse(storage, cfg, meta)
    print(f"study {study.study_name}: {len(study.trials)} trial(s) enqueued "
          f"({cfg.trials} x {cfg.epochs} epochs, seed {cfg.seed}, pruner {study.user_attrs['pruner']}{_drawn(study)})")
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
    from study.stages import create_fine

    storage = _storage(args)
    return _narrowed(create_fine(storage, _stage(args), NarrowRule(k=args.k)))


def cmd_narrow(args) -> int:
    from study.space import NarrowRule
    from study.stages import create_narrowed

    study = create_narrowed(_storage(args), args.source, _stage(args), NarrowRule(k=args.k),
                            name=args.study_name)
    return _narrowed(study)


def _narrowed(study) -> int:
    a = study.user_attrs
    print(f"study {study.study_name} (from {' -> '.join(a['lineage'])}): lr {a['space']['lr']}, "
          f"reg {a['space']['reg']} (rule {a['rule']}, pruner {a['pruner']}); "
          f"{len(study.trials)} trial(s) enqueued{_drawn(study)}")
    return 0


def _work(args, storage, study_name: str) -> int:
    from study import storage as db
    from study.signals import exit_code
    from study.worker import check_data, run_worker

    study = db.load(storage, study_name)  # an unknown study fails before anything loads
    crops = _data(args)
    check_data(study, crops)  # before TensorFlow loads
    scfg = _storage_config(args)
    cfg = resolve(WorkerConfig, args, study=study_name, reconnect_attempts=scfg.reconnect_attempts,
                  reconnect_backoff=scfg.connect_backoff)
    summary = run_worker(storage, crops, cfg, device=_device())
    print(f"{summary.study}: this worker completed {summary.completed}, failed {summary.failed}, "
          f"pruned {summary.pruned}" + (f"; stopped by {summary.interrupted}" if summary.interrupted else ""),
          file=sys.stderr)
    return exit_code(summary.interrupted) if summary.interrupted else 0


def cmd_worker(args) -> int:
    return _work(args, _storage(args), resolve(WorkerConfig, args).study)


def cmd_final(args) -> int:
    from study.results import study_report
    from study.stages import create_final

    storage = _storage(args)
    cfg = _stage(args)
    named = args.name is not None or bool(os.environ.get("FACEHPO_NAME"))
    # --from alone: the final study belongs to the source's run (facehpo-fine2 -> facehpo-final)
    study = create_final(storage, cfg.name if named or not args.source else None, cfg.epochs,
                         source=args.source)
    code = _work(args, storage, study.study_name)
    print(study_report(study))
    return code


def cmd_pipeline(args) -> int:
    from study import storage as db
    from study.coordinator import run_pipeline
    from study.results import study_report
    from study.signals import exit_code

    cfg = resolve(PipelineConfig, args)
    crops = _data(args)
    storage = _storage(args, create=True)
    _create_views(storage)
    summaries = run_pipeline(storage, crops, cfg, device=_device())
    if summaries[-1].interrupted:
        return exit_code(summaries[-1].interrupted)
    for s in summaries:
        print(study_report(db.load(storage, s.study), k=5), end="\n\n")
    return 0


def cmd_delete(args) -> int:
    from study.stages import delete_study

    n = delete_study(_storage(args), args.study)
    print(f"deleted study {args.study} and its {n} trial(s)")
    return 0


def cmd_report(args) -> int:
    from study import storage as db
    from study.results import study_report

    storage = _storage(args)
    if args.study:
        print(study_report(db.load(storage, args.study)))
    if args.html:
        from study.html_report import write_html

        print(f"wrote {write_html(storage, _stage(args).name, Path(args.html))}")
    if not args.study and not args.html:
        print("studies: " + (", ".join(db.study_names(storage)) or "none"))
    return 0


def _sigterm(signum, frame):
    """SIGTERM outside a worker's trial loop: stop like Ctrl-C, exit 143."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(143)


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
    command = COMMANDS[args.func]
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return command(args)
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


COMMANDS = {"data_build": cmd_data_build, "data_sample": cmd_data_sample, "train": cmd_train,
            "sanity": cmd_sanity, "init": cmd_init, "worker": cmd_worker, "narrow": cmd_narrow,
            "fine": cmd_fine,
            "final": cmd_final, "pipeline": cmd_pipeline, "db_views": cmd_db_views,
            "db_reader_role": cmd_db_reader_role, "delete": cmd_delete, "report": cmd_report}


if __name__ == "__main__":
    sys.exit(main())
