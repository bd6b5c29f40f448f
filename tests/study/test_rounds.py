"""Synchronous rounds (study/rounds.py) on the real SQLite and PostgreSQL storages.

Results are told through Optuna's API from a deterministic function of the parameters
(no TensorFlow): what matters is which configurations each round gets, and that a
round is drawn exactly once, only after the one before it has ended.
"""
import math
import random
import sys
import threading
import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from study import rounds
from study import storage as db
from study.rounds import RoundPlan, default_round, draw_round
from study.space import COARSE, REPORT_FINE
from study.stages import StageConfig, create_coarse, draw

META = {"content_hash": "sha256:abc", "source": "builtin-sample"}
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                                        "ignore:Heartbeat of storage:UserWarning")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/r.db"
    return request.getfixturevalue("fresh_pg")


def _open(url):
    return db.open_storage(db.StorageConfig(url=url, heartbeat_interval=1, grace_period=3), create=True)


def score(params) -> float | None:
    """A smooth landscape peaking at lr 1e-4, reg 1e-3; None = the trial fails (NaN)."""
    x, y = math.log10(params["lr"]), math.log10(params["reg"])
    if x > -3.3:
        return None
    return 0.95 - 0.02 * (x + 4) ** 2 - 0.01 * (y + 3) ** 2


def _pop(study):
    t = study.ask()
    for name, d in COARSE.distributions().items():
        t.suggest_float(name, d.low, d.high, log=True)
    return t


def _tell(study, t):
    value = score(t.params)
    if value is None:
        study.tell(t, state=TrialState.FAIL)
    elif value < 0.8:  # pruned after two epochs, as the median pruner would
        t.report(value - 0.05, 0)
        t.report(value, 1)
        study.tell(t, state=TrialState.PRUNED)
    else:
        study.tell(t, value)


def _run(storage, study, order: str, stale_once: bool = False) -> dict[int, dict]:
    """Play the workers until the budget is spent: take every WAITING trial, finish
    them in `order` (forward, reverse, shuffled), then advance. {draw: params}."""
    rng = random.Random(order)
    failed_stale = False
    while True:
        taken = []
        while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            taken.append(_pop(study))
        if not taken:
            assert rounds.advance(storage, study) == 0
            break
        if order == "reverse":
            taken.reverse()
        elif order == "shuffled":
            rng.shuffle(taken)
        for i, t in enumerate(taken):
            assert rounds.advance(storage, study) == 0  # the round still runs
            if stale_once and not failed_stale:  # its worker died: failed, retried later
                frozen = storage.get_trial(t._trial_id)
                study.tell(t, state=TrialState.FAIL)
                optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)
                failed_stale = True
                continue
            _tell(study, t)
        rounds.advance(storage, study)
    return {d: t.params for d, t in rounds.latest(study.get_trials()).items()}


def test_plan_defaults_and_round_seeds():
    assert [default_round(n, "tpe") for n in (1, 3, 20, 101, 1000)] == [1, 2, 4, 10, 10]
    assert default_round(37, "random") == 37
    p = RoundPlan.make("tpe", 21, None, seed=3, fixed=1, init_seed=4)
    assert (p.round_size, p.rounds, p.startup, list(p.draws(4))) == (5, 5, 5, [20])
    assert p.weight_seed(1) == 4 * 1_000_003 and p.weight_seed(3) == 4 * 1_000_003 + 2
    assert RoundPlan.from_attrs({**p.attrs(), "n_trials": 21, "seed": 3}) == p
    old = RoundPlan.from_attrs({"n_trials": 7, "seed": 2})  # a study from before rounds
    assert (old.sampler, old.rounds) == ("random", 1)
    assert rounds.round_seed(5, 0) == 5 and len({rounds.round_seed(5, r) for r in range(50)}) == 50


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_first_round_is_random_samplers_first_draws(sampler):
    """Drawn from no trial, every sampler's round 0 is its seeded random start: the
    first draws of a random study with the same seed."""
    plan = RoundPlan.make(sampler, 20, 4, seed=7)
    assert list(draw_round(plan, REPORT_FINE, 0, []).values()) == draw(REPORT_FINE, 4, seed=7)


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_same_seed_same_configurations_whatever_the_finishing_order(url, sampler):
    """Rounds of 4 over 12 trials; the same results told in another order (another
    number or timing of workers) give the same configurations, draw for draw. Some
    trials fail and some are pruned: they are told too, and the budget stays exact."""
    runs = []
    for i, order in enumerate(("forward", "shuffled")):
        storage = _open(url)
        study = create_coarse(storage, StageConfig(name=f"s{i}", trials=12, epochs=1, seed=1,
                                                   sampler=sampler, round_size=4), META)
        assert len(study.get_trials()) == 4  # round 0 only
        runs.append(_run(storage, study, order))
        states = {t.state for t in study.get_trials()}
        assert len(study.get_trials()) == 12 and states <= {TrialState.COMPLETE, TrialState.PRUNED,
                                                            TrialState.FAIL}
        assert [t.user_attrs["round"] for t in study.get_trials()] == [0] * 4 + [1] * 4 + [2] * 4
        storage.engine.dispose()
    assert runs[0] == runs[1] and sorted(runs[0]) == list(range(12))
    assert len({(p["lr"], p["reg"]) for p in runs[0].values()}) == 12
    # later rounds are the model's, not more random draws
    assert [runs[0][d] for d in range(4, 12)] != draw(COARSE, 12, seed=1)[4:]


def test_a_stale_trial_is_retried_and_the_round_waits_for_it(url):
    """A trial of round 0 whose worker died is failed and re-queued; round 1 is drawn
    only after its retry ends, from the retry's result: the same configurations as a
    run where nothing died, and still exactly the budget's draws."""
    got = []
    for i, stale in enumerate((False, True)):
        storage = _open(url)
        study = create_coarse(storage, StageConfig(name=f"k{i}", trials=8, epochs=1, seed=2,
                                                   sampler="tpe", round_size=4), META)
        got.append(_run(storage, study, "forward", stale_once=stale))
        n = len(study.get_trials())
        assert n == 8 + stale and len(rounds.latest(study.get_trials())) == 8
        storage.engine.dispose()
    assert got[0] == got[1]


def test_gp_without_pytorch_is_one_setup_line(monkeypatch):
    from study.errors import SetupError

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(SetupError, match=r"^sampler gp needs PyTorch and SciPy \(torch is missing\)"):
        rounds.sampler(RoundPlan.make("gp", 4, 2, seed=0), 1)
    with pytest.raises(SetupError, match="unknown sampler 'cma'"):
        RoundPlan.make("cma", 4, 2, seed=0)


def test_told_trials_keep_their_state_and_epochs():
    """What the sampler sees: COMPLETE with its value, PRUNED with its per-epoch values, FAIL
    (never a value), the last attempt of each draw, in draw order."""
    dists = COARSE.distributions()
    mk = optuna.trial.create_trial
    done = mk(value=0.9, params={"lr": 1e-4, "reg": 1.0}, distributions=dists,
              user_attrs={"draw": 1})
    pruned = mk(state=TrialState.PRUNED, params={"lr": 2e-4, "reg": 1.0}, distributions=dists,
                intermediate_values={0: 0.5, 1: 0.6}, user_attrs={"draw": 0})
    failed = mk(state=TrialState.FAIL, params={"lr": 3e-4, "reg": 1.0}, distributions=dists,
                user_attrs={"draw": 0})
    for number, t in enumerate((failed, pruned, done)):
        t.number = number
    last = rounds.latest([failed, pruned, done])
    assert last == {0: pruned, 1: done}
    told = rounds._told(pruned, dists)
    assert told.state == TrialState.PRUNED and told.intermediate_values == {0: 0.5, 1: 0.6}
    assert rounds._told(failed, dists).state == TrialState.FAIL and rounds._told(done, dists).value == 0.9
    plan = RoundPlan.make("tpe", 4, 2, seed=0)
    assert rounds.next_round(plan, [pruned, done]) == 1
    running = mk(state=TrialState.RUNNING, params={"lr": 1e-4, "reg": 1.0}, distributions=dists,
                 user_attrs={"draw": 1})
    running.number = 5
    assert rounds.next_round(plan, [pruned, done, running]) is None


def test_racing_processes_draw_a_round_exactly_once(url, monkeypatch):
    """Five workers notice the end of round 0 at once: one draws round 1 (slowly), the
    others wait on the lock and then find it drawn."""
    storage = _open(url)
    study = create_coarse(storage, StageConfig(name="race", trials=9, epochs=1, seed=3,
                                               sampler="tpe", round_size=3), META)
    for _ in range(3):
        _tell(study, _pop(study))
    draws, real = [], rounds.draw_round

    def slow(*args):
        draws.append(args[2])
        time.sleep(0.5)  # long enough for every other worker to reach the lock
        return real(*args)

    monkeypatch.setattr(rounds, "draw_round", slow)
    barrier, counts, errors = threading.Barrier(5), [], []

    def worker():
        try:
            s = db.open_storage(db.StorageConfig(url=url))
            mine = db.load(s, "race-coarse")
            barrier.wait()
            counts.append(rounds.advance(s, mine))
            s.engine.dispose()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and draws == [1] and sorted(counts) == [0, 0, 0, 0, 3]
    assert sorted(t.user_attrs["draw"] for t in study.get_trials()) == list(range(6))
    storage.engine.dispose()
