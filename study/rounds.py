"""Synchronous rounds: how a study's configurations are drawn, reproducibly and exactly once.

A study's budget is `n_trials` draws, numbered 0..n-1 and cut into rounds of
`round_size`. Round r is drawn by the study's sampler (random, TPE or GP), seeded from
(study seed, r), from every trial of rounds < r, and enqueued as WAITING trials with
user attributes `draw`, `round` and `seed` (weight init). Round r is drawn only once
every trial of the rounds before it has ended, by whichever process calls `advance`
first, under a database lock; the others find it drawn. So the same seed and the same
results give the same configurations whatever the number of workers or their timing,
and the budget stays exact. A random study is one round holding the whole budget,
drawn when the study is created: exactly the draws facehpo always made.

What the sampler is told: the last attempt of each draw (a trial failed as stale or
interrupted is retried with the same draw number; its retry is what counts), with its
state, value and per-epoch values, in draw order, as Optuna would have stored it.
Failed and pruned trials go in as FAIL / PRUNED; the samplers use them as Optuna does
(TPE ranks PRUNED ones by their last epoch and ignores FAIL; GP uses COMPLETE only).
The draws of one round are asked one after another with the earlier ones still RUNNING,
so TPE's constant liar and GP's batch acquisition (qLogEI) spread the round out.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.errors import SetupError
from study.space import SearchSpace

SAMPLERS = ("random", "tpe", "gp")
ROUND_NEEDS_ADAPTIVE = "--round sets the rounds of a tpe or gp study: add --sampler tpe or gp"
MAX_STARTUP = 10  # Optuna's n_startup_trials default for TPE and GP
_UNFINISHED = (TrialState.WAITING, TrialState.RUNNING)


def default_round(n_trials: int, sampler: str) -> int:
    """Random: the whole budget at once. Adaptive: about sqrt(budget) per round (as many
    rounds as trials per round), 2 to 10: 20 trials -> 5 rounds of 4, 100 -> 10 of 10."""
    if sampler == "random":
        return n_trials
    return max(1, min(n_trials, 10, max(2, round(math.sqrt(n_trials)))))


def round_seed(seed: int, r: int) -> int:
    """The sampler's seed for round r. Round 0 uses the study seed itself, so every
    sampler's first round (drawn from no trial: its seeded random start) is the same,
    and a random study's draws are RandomSampler(seed)'s, as before rounds existed."""
    return seed if r == 0 else (seed * 1_000_003 + r * 7_919) % 2**32


@dataclass(frozen=True)
class RoundPlan:
    """How a study's draws are made; stored in its user attributes (`plan_attrs`)."""

    sampler: str = "random"
    n_trials: int = 1
    round_size: int = 1
    seed: int = 0          # the sampler's seed (round_seed(seed, r) for round r)
    startup: int = 1       # COMPLETE/PRUNED trials before TPE / GP model (n_startup_trials)
    fixed: int = 0         # draws 0..fixed-1 are given (the fine stage's best coarse trial)
    init_seed: int = 0     # weight init of draw i >= fixed: init_seed * 1_000_003 + (i - fixed)

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise SetupError(f"unknown sampler {self.sampler!r}: choose {', '.join(SAMPLERS)}")
        if self.n_trials < 1 or self.round_size < 1 or self.startup < 0:
            raise SetupError(f"{self.n_trials} trials in rounds of {self.round_size}: need "
                             "at least 1 of each")
        if not 0 <= self.fixed <= min(self.n_trials, self.round_size):
            raise SetupError(f"{self.fixed} given configurations do not fit in the first round "
                             f"of {self.round_size}")

    @classmethod
    def make(cls, sampler: str, n_trials: int, round_size: int | None, seed: int,
             fixed: int = 0, init_seed: int | None = None) -> "RoundPlan":
        """The plan with facehpo's defaults: round size `default_round`, and the model
        starting after the first round (at most Optuna's 10 startup trials)."""
        size = min(round_size or default_round(n_trials, sampler), n_trials)
        return cls(sampler=sampler, n_trials=n_trials, round_size=max(size, fixed),
                   seed=seed, startup=min(max(size, fixed), MAX_STARTUP), fixed=fixed,
                   init_seed=seed if init_seed is None else init_seed)

    @property
    def rounds(self) -> int:
        return -(-self.n_trials // self.round_size)

    def draws(self, r: int) -> range:
        return range(r * self.round_size, min((r + 1) * self.round_size, self.n_trials))

    def weight_seed(self, draw: int) -> int:
        return self.init_seed * 1_000_003 + (draw - self.fixed)

    def attrs(self) -> dict:
        """Study user attributes; `n_trials` and `seed` are the stage's own (`sampler_seed`
        is derived from `seed` and the study, study/stages.py sampler_seed)."""
        return {"sampler": self.sampler, "round_size": self.round_size, "startup": self.startup,
                "fixed": self.fixed, "init_seed": self.init_seed, "sampler_seed": self.seed}

    @classmethod
    def from_attrs(cls, attrs: dict) -> "RoundPlan":
        """A study made before rounds existed reads as one random round (its draws all enqueued)."""
        n = int(attrs["n_trials"])
        return cls(sampler=attrs.get("sampler", "random"), n_trials=n,
                   round_size=int(attrs.get("round_size", n)),
                   seed=int(attrs.get("sampler_seed", attrs.get("seed", 0))),
                   startup=int(attrs.get("startup", 0)), fixed=int(attrs.get("fixed", 0)),
                   init_seed=int(attrs.get("init_seed", attrs.get("seed", 0))))

    def to_dict(self) -> dict:
        return asdict(self)


def sampler(plan: RoundPlan, r: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler that draws round r (a fresh one each round: no state carried over)."""
    seed = round_seed(plan.seed, r)
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if plan.sampler == "tpe":  # Optuna 5 defaults: multivariate, constant_liar
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=plan.startup)
    try:
        import scipy  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise SetupError(f"sampler gp needs PyTorch and SciPy ({e.name} is missing): "
                         "pip install 'facehpo[gp]' (docs/design.md: a CPU build is enough)") from None
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=plan.startup)


def latest(trials: Iterable[FrozenTrial]) -> dict[int, FrozenTrial]:
    """The last attempt of each draw: {draw: trial}. A retry has a higher trial number."""
    out: dict[int, FrozenTrial] = {}
    for t in trials:
        d = t.user_attrs.get("draw")
        if d is not None and (d not in out or t.number > out[d].number):
            out[int(d)] = t
    return out


def next_round(plan: RoundPlan, trials: Sequence[FrozenTrial]) -> int | None:
    """The round to draw now: the first with a draw not enqueued yet, once every draw
    of the rounds before it has ended. None while one still runs, or when all are drawn."""
    have = latest(trials)
    for r in range(plan.rounds):
        if any(d not in have for d in plan.draws(r)):
            before = [have[d] for d in range(plan.draws(r).start)]
            return None if any(t.state in _UNFINISHED for t in before) else r
    return None


def all_drawn(plan: RoundPlan, trials: Sequence[FrozenTrial]) -> bool:
    return len(latest(trials).keys() & set(range(plan.n_trials))) == plan.n_trials


def _told(t: FrozenTrial, dists: dict) -> FrozenTrial:
    """Trial t as the scratch study stores it: params, state, value, per-epoch values."""
    params = dict(t.params) or dict(t.system_attrs.get("fixed_params", {}))
    state = t.state if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else TrialState.FAIL
    if state == TrialState.COMPLETE and (t.value is None or not math.isfinite(t.value)):
        state = TrialState.FAIL
    return optuna.trial.create_trial(
        state=state, value=t.value if state == TrialState.COMPLETE else None,
        params={k: params[k] for k in dists if k in params},
        distributions={k: d for k, d in dists.items() if k in params},
        intermediate_values={s: v for s, v in t.intermediate_values.items() if math.isfinite(v)})


def draw_round(plan: RoundPlan, space: SearchSpace, r: int,
               trials: Sequence[FrozenTrial]) -> dict[int, dict[str, float]]:
    """{draw: params} of round r's sampled draws (not the given ones), from the last
    attempts of every draw of rounds < r. Pure: the same trials give the same configurations."""
    dists = space.distributions()
    have = latest(trials)
    start = plan.draws(r).start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        scratch = optuna.create_study(direction="maximize", sampler=sampler(plan, r))  # in memory
        for d in range(start):
            scratch.add_trial(_told(have[d], dists))
        # asked in draw order, each left RUNNING while the next is asked
        return {d: dict(scratch.ask(dists).params) for d in plan.draws(r) if d >= plan.fixed}


def enqueue_round(study: optuna.Study, plan: RoundPlan, r: int, configs: dict[int, dict],
                  extra: dict[int, dict] | None = None) -> int:
    """Enqueue the draws of round r that are not in `study` yet; how many were."""
    have = latest(study.get_trials(deepcopy=False))
    n = 0
    for d, params in sorted(configs.items()):
        if d not in have:
            attrs = {"draw": d, "round": r, "seed": plan.weight_seed(d), **(extra or {}).get(d, {})}
            study.enqueue_trial(params, user_attrs=attrs)
            n += 1
    return n


def lock_key(study_name: str) -> str:
    return f"round:{study_name}"


def advance(storage, study: optuna.Study) -> int:
    """Draw and enqueue the next round if the current one has ended; how many trials
    were enqueued (0: a round still runs, another process drew it, or all are drawn).
    Under the study's round lock, so a round is drawn exactly once."""
    from study import locks

    plan = RoundPlan.from_attrs(study.user_attrs)
    if next_round(plan, study.get_trials(deepcopy=False)) is None:  # the cheap look, unlocked
        return 0
    with locks.exclusive(storage, lock_key(study.study_name)):
        trials = study.get_trials(deepcopy=False)
        r = next_round(plan, trials)
        if r is None:
            return 0
        space = SearchSpace.from_dict(study.user_attrs["space"])
        return enqueue_round(study, plan, r, draw_round(plan, space, r, trials))
