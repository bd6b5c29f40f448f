"""Coarse -> fine -> final: create each study once and enqueue its configurations.

One coordinator (`facehpo init`, `facehpo fine`, `facehpo final` or the pipeline)
creates a study and enqueues its first round of configurations as WAITING trials;
workers only take them. With the default random sampler the first round is the whole
budget, drawn by a seeded RandomSampler; a TPE or GP study's later rounds are drawn by
the workers as each round ends (study/rounds.py). Either way the same seed gives the
same configurations whatever the number of workers, and the budget is exact.
"""
from __future__ import annotations

import logging
import warnings
import zlib
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from study import locks, rounds
from study import storage as db
from study.errors import SetupError
from study.options import model_variant, option, run_name, seed
from study.pruning import PRUNERS
from study.rounds import SAMPLERS, RoundPlan
from study.results import ranked
from study.space import COARSE, NarrowRule, NotEnoughTrials, SearchSpace, narrow

log = logging.getLogger(__name__)

STAGES = ("coarse", "fine", "final")
VERSION = "0.1.0"
METRIC = "validation accuracy"  # what every trial returns (study/objective.py)


def study_name(name: str, stage: str) -> str:
    return f"{name}-{stage}"


def run_of(study: optuna.Study) -> str:
    """The run a study belongs to: its `run` attribute, else its name less the stage."""
    run = study.user_attrs.get("run")
    if run:
        return run
    name = study.study_name
    for suffix in ("-coarse", "-final", "-fine"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    head, _, tail = name.rpartition("-fine")
    return head if head and tail.isdigit() else name


def _depth(study: optuna.Study) -> int:
    """Narrowings from the coarse study: coarse 0, fine 1, fine2 2 ..."""
    attrs = study.user_attrs
    return int(attrs.get("depth", {"coarse": 0, "fine": 1}.get(attrs.get("stage"), 0)))


def narrowed_name(parent: optuna.Study) -> str:
    """RUN-coarse -> RUN-fine -> RUN-fine2 -> RUN-fine3 ...: the chain stays readable."""
    depth = _depth(parent) + 1
    return f"{run_of(parent)}-fine" + (str(depth) if depth > 1 else "")


@dataclass(frozen=True)
class StageConfig:
    """One stage's budget. `trials` configurations, each trained `epochs` epochs."""

    name: str = run_name()
    model: int = model_variant()
    trials: int = option(100, flag="--trials", kind="positive", metavar="N", help="configurations to train")
    epochs: int = option(5, flag="--epochs", kind="positive", metavar="E", help="epochs per configuration")
    seed: int = seed()
    batch_size: int = option(20, flag="--batch-size", kind="positive", metavar="B", help="crops per training step")
    # None: the existing study's (a resumed study keeps what it stored), else random
    sampler: str | None = option(None, flag="--sampler", choices=SAMPLERS,
                                 help="how configurations are drawn: random (default), tpe or gp in "
                                 "synchronous rounds (study/rounds.py)")
    # None: the existing study's, else rounds.default_round (~sqrt(trials), 2 to 10)
    round_size: int | None = option(None, flag="--round", kind="positive", metavar="R",
                                    help="trials per round of a tpe / gp study (default ~sqrt(trials), 2-10)")
    pruner: str | None = option(None, flag="--pruner", kind="str", choices=PRUNERS,
                                help="stops unpromising trials early; stored on the study, used by "
                                "every worker (default none; narrow: the parent study's)")

    def __post_init__(self):
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise SetupError(f"unknown pruner {self.pruner!r}: choose {', '.join(PRUNERS)}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise SetupError(f"unknown sampler {self.sampler!r}: choose {', '.join(SAMPLERS)}")
        if self.round_size is not None and self.round_size < 1:
            raise SetupError(f"round_size must be at least 1, got {self.round_size}")
        if self.model not in (1, 2):
            raise SetupError(f"unknown model {self.model}: choose 1 or 2")
        for field in ("trials", "epochs", "batch_size"):
            if getattr(self, field) < 1:
                raise SetupError(f"{field} must be at least 1, got {getattr(self, field)}")
        if not self.name or len(self.name) > 400:
            raise SetupError("the run name must be 1 to 400 characters")


def draw(space: SearchSpace, n: int, seed: int) -> list[dict[str, float]]:
    """n configurations from Optuna's RandomSampler(seed), log-uniform in `space`."""
    sampler = optuna.samplers.RandomSampler(seed=seed)
    scratch = optuna.create_study(sampler=sampler)  # in memory: only the sampler's draws matter
    dists = space.distributions()
    return [dict(scratch.ask(dists).params) for _ in range(n)]


def _data_attrs(meta: dict) -> dict:
    return {"data_hash": meta["content_hash"], "data_source": meta.get("source", "unknown")}


_PLAN_KEYS = ("sampler", "round_size", "startup", "fixed", "init_seed")


def _create(storage, name: str, attrs: dict, configs: list[dict], extra: list[dict],
            plan: RoundPlan | None = None) -> optuna.Study:
    """Create `name` with `attrs`, enqueue the given `configs` (draws 0.., with per-config
    user attrs `extra`), then `plan`'s first round (study/rounds.py), once: re-running
    finishes an interrupted enqueue and changes nothing else; a study of that name with
    other settings is refused."""
    plan = plan or RoundPlan.make("random", len(configs), None, attrs.get("seed", 0), fixed=len(configs))
    attrs = {**attrs, **plan.attrs()}
    with locks.exclusive(storage, f"create:{name}"):
        if db.exists(storage, name):
            study = db.load(storage, name)
            had = {**study.user_attrs, **RoundPlan.from_attrs(study.user_attrs).attrs()}
            diff = [f"{k} {had.get(k)!r} != {v!r}" for k, v in attrs.items()
                    if k != "facehpo_version" and had.get(k) != v]
            if diff:
                raise SetupError(f"study {name!r} exists with other settings ({'; '.join(diff)}): "
                                 f"choose another --name, or delete it first (facehpo delete --study {name})")
        else:
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
            with warnings.catch_warnings():  # experimental since Optuna 3.2, unchanged since
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([METRIC])  # optuna-dashboard's label, not "Objective 0"
            for k, v in attrs.items():
                study.set_user_attr(k, v)
        have = {t.user_attrs.get("draw") for t in study.get_trials(deepcopy=False)}
        for i, (params, more) in enumerate(zip(configs, extra)):
            if i not in have:
                study.enqueue_trial(params, user_attrs={"draw": i, "round": 0, **more})
    rounds.advance(storage, study)  # round 0; a random study's whole budget
    return study


def sampler_seed(seed: int, name: str, stage: str) -> int:
    """The seed of study `name`'s sampler, from the run seed and the study, recorded as its
    `sampler_seed`. The coarse study's is the run seed itself (the same seed draws the same
    coarse configurations as ever); any other study's is a hash of both, so a fine study's
    draws are independent of its parent's, not the parent's draws rescaled."""
    if stage == "coarse":
        return seed
    return zlib.crc32(f"{seed}:{name}".encode())


def _plan(storage, name: str, cfg: StageConfig, n: int, fixed: int = 0,
          init_seed: int | None = None, stage: str = "coarse") -> RoundPlan:
    """cfg's sampler and round size; left out (None), the existing study's."""
    sampler, size = cfg.sampler, cfg.round_size
    if (sampler is None or size is None) and db.exists(storage, name):
        had = RoundPlan.from_attrs(db.load(storage, name).user_attrs)
        if sampler in (None, had.sampler):
            sampler, size = had.sampler, size or had.round_size
    if cfg.round_size is not None and sampler in (None, "random"):
        raise SetupError(rounds.ROUND_NEEDS_ADAPTIVE)
    return RoundPlan.make(sampler or "random", n, size, sampler_seed(cfg.seed, name, stage), fixed,
                          cfg.seed if init_seed is None else init_seed)


def _seeds(seed: int, n: int) -> list[dict]:
    return [{"seed": seed * 1_000_003 + i} for i in range(n)]  # weight-init seed per config


def create_coarse(storage, cfg: StageConfig, data_meta: dict) -> optuna.Study:
    space = COARSE
    attrs = {"stage": "coarse", "model": cfg.model, "epochs": cfg.epochs, "n_trials": cfg.trials,
             "batch_size": cfg.batch_size, "seed": cfg.seed, "space": space.to_dict(),
             "run": cfg.name, "depth": 0, "lineage": [], "pruner": cfg.pruner or "none",
             **_data_attrs(data_meta), "facehpo_version": VERSION}
    name = study_name(cfg.name, "coarse")
    return _create(storage, name, attrs, [], [], _plan(storage, name, cfg, cfg.trials))


def _finished_parent(storage, name: str) -> optuna.Study:
    parent = db.load(storage, name)
    trials = parent.get_trials(deepcopy=False)
    busy = [t.number for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    if busy:
        raise SetupError(f"study {name!r} still has {len(busy)} unfinished trials "
                         f"(e.g. {busy[:5]}): let its workers finish first")
    plan = RoundPlan.from_attrs(parent.user_attrs)
    if not rounds.all_drawn(plan, trials):
        left = plan.n_trials - len(rounds.latest(trials))
        raise SetupError(f"study {name!r} still has {left} of its {plan.n_trials} trials to draw "
                         f"({plan.sampler}, rounds of {plan.round_size}): run a worker on it first")
    return parent


def create_fine(storage, cfg: StageConfig, rule: NarrowRule = NarrowRule()) -> optuna.Study:
    """`facehpo fine`: narrow NAME-coarse into NAME-fine (create_narrowed)."""
    return create_narrowed(storage, study_name(cfg.name, "coarse"), cfg, rule,
                           name=study_name(cfg.name, "fine"))


def create_narrowed(storage, parent_name: str, cfg: StageConfig, rule: NarrowRule = NarrowRule(),
                    name: str | None = None) -> optuna.Study:
    """Narrow any finished study's ranges from its top-k trials into a new study (default
    name: narrowed_name); enqueue the parent's best configuration plus `cfg.trials` fresh
    draws (so the study holds trials + 1). The new study records its parent and the whole
    lineage (coarse first); its pruner is cfg's, else the parent's."""
    parent = _finished_parent(storage, parent_name)
    top = ranked(parent.get_trials(deepcopy=False))
    try:
        space = narrow([t.params for t in top], SearchSpace.from_dict(parent.user_attrs["space"]), rule)
    except NotEnoughTrials as e:
        raise SetupError(f"{parent.study_name}: {e}; lower --top or run more trials there") from None
    pa = parent.user_attrs
    name = name or narrowed_name(parent)
    if name == parent.study_name:
        raise SetupError(f"the narrowed study needs another name than its parent {name!r}")
    attrs = {"stage": "fine", "model": pa["model"], "epochs": cfg.epochs, "n_trials": cfg.trials + 1,
             "batch_size": pa["batch_size"], "seed": cfg.seed, "space": space.to_dict(),
             "parent": parent.study_name, "k": rule.k, "rule": rule.name,
             "run": run_of(parent), "depth": _depth(parent) + 1,
             "lineage": [*pa.get("lineage", []), parent.study_name],
             "pruner": cfg.pruner or pa.get("pruner", "none"),
             "data_hash": pa["data_hash"], "data_source": pa["data_source"], "facehpo_version": VERSION}
    best = top[0]
    extra = [{"seed": best.user_attrs.get("seed", cfg.seed), "source_study": parent.study_name,
              "source_trial": best.number}]
    plan = _plan(storage, name, cfg, cfg.trials + 1, fixed=1, init_seed=cfg.seed + 1, stage="fine")
    return _create(storage, name, attrs, [dict(best.params)], extra, plan)


def create_final(storage, name: str | None, epochs: int = 50, source: str | None = None) -> optuna.Study:
    """One trial, in study NAME-final: the best configuration of `source` (default
    NAME-fine; any finished study), retrained for `epochs` and tested once. Without
    `name`, NAME is the source's run."""
    if epochs < 1:
        raise SetupError(f"epochs must be at least 1, got {epochs}")
    if source is None and name is None:
        raise SetupError("the final stage needs a run name or a source study")
    parent = _finished_parent(storage, source or study_name(name, "fine"))
    name = name or run_of(parent)
    top = ranked(parent.get_trials(deepcopy=False))
    if not top:
        raise SetupError(f"{parent.study_name} has no COMPLETE trial to retrain")
    best, pa = top[0], parent.user_attrs
    attrs = {"stage": "final", "model": pa["model"], "epochs": epochs, "n_trials": 1,
             "batch_size": pa["batch_size"], "seed": pa["seed"], "space": pa["space"],
             "parent": parent.study_name, "source_trial": best.number, "run": name,
             "lineage": [*pa.get("lineage", []), parent.study_name], "pruner": "none",
             "data_hash": pa["data_hash"], "data_source": pa["data_source"], "facehpo_version": VERSION}
    extra = [{"seed": best.user_attrs.get("seed", pa["seed"]), "source_study": parent.study_name,
              "source_trial": best.number}]
    return _create(storage, study_name(name, "final"), attrs, [dict(best.params)], extra)


def delete_study(storage, name: str) -> int:
    """Delete study `name` with its trials (Optuna's delete_study); how many trials it had.
    Refused while a trial of it is RUNNING: stop its workers first. Files under --out stay."""
    study = db.load(storage, name)
    trials = study.get_trials(deepcopy=False)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        raise SetupError(f"study {name!r} has {len(running)} RUNNING trial(s) (e.g. {running[:5]}): "
                         "stop its workers first")
    children = [s for s in db.study_names(storage) if s != name
                and db.load(storage, s).user_attrs.get("parent") == name]
    optuna.delete_study(study_name=name, storage=storage)
    if children:
        log.warning("studies %s were derived from %s; their lineage still names it",
                    ", ".join(children), name)
    return len(trials)

