"""Creating and enqueueing the three stages, on SQLite and the real PostgreSQL.

Results are told through Optuna's API (no TensorFlow): these tests are about what
the coordinator puts in the database, not about training.
"""
import math

import optuna
import pytest
from optuna.trial import TrialState

from study import storage as db
from study.errors import SetupError
from study.space import COARSE, NarrowRule, SearchSpace
from study.stages import StageConfig, create_coarse, create_final, create_fine, draw

META = {"content_hash": "sha256:abc", "source": "builtin-sample"}


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/s.db"
    else:
        url = request.getfixturevalue("fresh_pg")
    s = db.open_storage(db.StorageConfig(url=url, heartbeat_interval=1, grace_period=3), create=True)
    yield s
    s.engine.dispose()


def _pop(study):
    """Play worker: pop a WAITING trial and suggest its (fixed) parameters."""
    t = study.ask()
    for name, d in SearchSpace.from_dict(study.user_attrs["space"]).distributions().items():
        t.suggest_float(name, d.low, d.high, log=True)
    return t


def _finish(study, value_of):
    """Tell every WAITING trial a value computed from its params."""
    while study.get_trials(states=(TrialState.WAITING,)):
        t = _pop(study)
        t.set_user_attr("val_loss", 1.0)
        study.tell(t, value_of(t.params))


def test_draws_are_seeded_log_uniform_and_in_range():
    a, b = draw(COARSE, 200, seed=3), draw(COARSE, 200, seed=3)
    assert a == b and draw(COARSE, 5, seed=4) != a[:5]
    logs = [math.log10(c["lr"]) for c in a]
    assert all(-6 <= x <= -3 for x in logs)
    # log-uniform: about half of the draws below the log midpoint -4.5
    assert 70 < sum(x < -4.5 for x in logs) < 130


def test_coarse_enqueues_exactly_n_and_is_idempotent(storage):
    cfg = StageConfig(name="r1", trials=7, epochs=2, seed=5)
    study = create_coarse(storage, cfg, META)
    again = create_coarse(storage, cfg, META)
    trials = again.get_trials()
    assert len(trials) == 7 and all(t.state == TrialState.WAITING for t in trials)
    assert [t.system_attrs["fixed_params"] for t in trials] == draw(COARSE, 7, seed=5)
    assert study.user_attrs["space"] == COARSE.to_dict() and study.user_attrs["data_hash"] == "sha256:abc"
    assert sorted(t.user_attrs["draw"] for t in trials) == list(range(7))
    assert again.metric_names == ["validation accuracy"]  # optuna-dashboard's axis label


def test_an_interrupted_enqueue_is_completed_not_duplicated(storage, monkeypatch):
    """The coordinator dies after 3 of its 5 enqueues; the same command again enqueues
    the 2 missing draws, and a third run changes nothing."""
    cfg = StageConfig(name="r2", trials=5, epochs=1)
    real, calls = optuna.Study.enqueue_trial, []

    def dying(self, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C (or a lost connection) between two enqueues
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", dying)
    with pytest.raises(KeyboardInterrupt):
        create_coarse(storage, cfg, META)
    monkeypatch.setattr(optuna.Study, "enqueue_trial", real)
    half = db.load(storage, "r2-coarse").get_trials()
    assert sorted(t.user_attrs["draw"] for t in half) == [0, 1, 2]
    for _ in range(2):
        study = create_coarse(storage, cfg, META)
        trials = study.get_trials()
        assert sorted(t.user_attrs["draw"] for t in trials) == [0, 1, 2, 3, 4]
        by_draw = {t.user_attrs["draw"]: t.system_attrs["fixed_params"] for t in trials}
        assert [by_draw[i] for i in range(5)] == draw(COARSE, 5, seed=cfg.seed)


def _positions(study, space: SearchSpace) -> list[float]:
    """Each fresh draw's lr as a fraction of the study's log range, in draw order."""
    lo, hi = math.log10(space.lr.low), math.log10(space.lr.high)
    trials = sorted((t for t in study.get_trials() if "source_trial" not in t.user_attrs),
                    key=lambda t: t.user_attrs["draw"])
    return [(math.log10(t.system_attrs["fixed_params"]["lr"]) - lo) / (hi - lo) for t in trials]


def test_each_study_draws_from_its_own_recorded_seed(storage):
    """With one run seed, a fine study's draws are not its parent's draws rescaled: each
    study's sampler seed comes from the run seed and the study, and is recorded."""
    from study.stages import create_narrowed, sampler_seed

    coarse = create_coarse(storage, StageConfig(name="ind", trials=20, epochs=1, seed=1), META)
    _finish(coarse, lambda p: -abs(math.log10(p["lr"]) + 4))
    fine = create_fine(storage, StageConfig(name="ind", trials=8, epochs=1, seed=1), NarrowRule(k=5))
    _finish(fine, lambda p: -abs(math.log10(p["lr"]) + 4))
    fine2 = create_narrowed(storage, "ind-fine", StageConfig(trials=8, epochs=1, seed=1), NarrowRule(k=5))
    seeds = [s.user_attrs["sampler_seed"] for s in (coarse, fine, fine2)]
    assert seeds == [1, sampler_seed(1, "ind-fine", "fine"), sampler_seed(1, "ind-fine2", "fine")]
    assert len(set(seeds)) == 3
    c, f, f2 = (_positions(s, SearchSpace.from_dict(s.user_attrs["space"])) for s in (coarse, fine, fine2))
    # the old bug: fine draw i sat where coarse draw i sat (to 4 digits); now not one does
    assert not any(abs(a - b) < 1e-3 for a, b in zip(c, f)), (c[:4], f[:4])
    assert not any(abs(a - b) < 1e-3 for a, b in zip(f, f2)), (f[:4], f2[:4])
    assert fine2.user_attrs["lineage"] == ["ind-coarse", "ind-fine"]


def test_same_name_with_other_settings_is_refused(storage):
    create_coarse(storage, StageConfig(name="r3", trials=3, epochs=1), META)
    with pytest.raises(SetupError, match="exists with other settings.*epochs 1 != 2"):
        create_coarse(storage, StageConfig(name="r3", trials=3, epochs=2), META)


def test_fine_narrows_from_top_k_and_records_lineage(storage):
    coarse = create_coarse(storage, StageConfig(name="r4", trials=20, epochs=1, seed=1), META)
    _finish(coarse, lambda p: -abs(math.log10(p["lr"]) + 4))  # best near lr 1e-4
    fine = create_fine(storage, StageConfig(name="r4", trials=6, epochs=3, seed=2), NarrowRule(k=5))
    attrs = fine.user_attrs
    assert attrs["parent"] == "r4-coarse" and attrs["k"] == 5 and attrs["rule"] == NarrowRule(k=5).name
    space = SearchSpace.from_dict(attrs["space"])
    assert COARSE.lr.low <= space.lr.low < 1e-4 < space.lr.high <= COARSE.lr.high
    trials = fine.get_trials()
    assert len(trials) == 7 == attrs["n_trials"]
    best = max(coarse.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    assert trials[0].system_attrs["fixed_params"] == best.params and trials[0].user_attrs["source_trial"] == best.number


def test_fine_refuses_unfinished_or_too_small_parent(storage):
    coarse = create_coarse(storage, StageConfig(name="r5", trials=3, epochs=1), META)
    with pytest.raises(SetupError, match="still has 3 unfinished trials"):
        create_fine(storage, StageConfig(name="r5", trials=2, epochs=1), NarrowRule(k=2))
    _finish(coarse, lambda p: 0.5)
    with pytest.raises(SetupError, match="need 10 COMPLETE trials.*has 3"):
        create_fine(storage, StageConfig(name="r5", trials=2, epochs=1), NarrowRule(k=10))


def test_final_takes_best_fine_trial_ties_to_lower_val_loss(storage):
    coarse = create_coarse(storage, StageConfig(name="r6", trials=4, epochs=1), META)
    _finish(coarse, lambda p: 0.5)
    fine = create_fine(storage, StageConfig(name="r6", trials=3, epochs=1), NarrowRule(k=2))
    losses = iter([0.9, 0.2, 0.5, 0.1])
    while fine.get_trials(states=(TrialState.WAITING,)):
        t = _pop(fine)
        loss = next(losses)
        t.set_user_attr("val_loss", loss)
        fine.tell(t, 0.9 if loss != 0.1 else 0.8)  # three tie at 0.9; 0.2 has the lowest loss
    final = create_final(storage, "r6", epochs=2)
    (trial,) = final.get_trials()
    winner = [t for t in fine.trials if t.user_attrs["val_loss"] == 0.2][0]
    assert trial.system_attrs["fixed_params"] == winner.params and final.user_attrs["source_trial"] == winner.number
    assert final.user_attrs["parent"] == "r6-fine" and final.user_attrs["epochs"] == 2


def test_unknown_study_names_what_exists(storage):
    create_coarse(storage, StageConfig(name="r7", trials=1, epochs=1), META)
    with pytest.raises(SetupError, match="no study named 'nope'.*r7-coarse"):
        db.load(storage, "nope")


@pytest.mark.parametrize("kw", [{"trials": 0}, {"epochs": -1}, {"model": 3}, {"name": ""}])
def test_bad_stage_config(kw):
    with pytest.raises(SetupError):
        StageConfig(**kw)


def test_delete_removes_a_study_so_init_can_recreate_it_bigger(storage):
    from study.stages import delete_study

    study = create_coarse(storage, StageConfig(name="del", trials=2, epochs=1), META)
    with pytest.raises(SetupError, match="exists with other settings.*n_trials 2 != 4"):
        create_coarse(storage, StageConfig(name="del", trials=4, epochs=1), META)
    running = _pop(study)
    with pytest.raises(SetupError, match="1 RUNNING trial"):
        delete_study(storage, "del-coarse")
    study.tell(running, 0.5)
    assert delete_study(storage, "del-coarse") == 2
    assert not db.exists(storage, "del-coarse")
    assert len(create_coarse(storage, StageConfig(name="del", trials=4, epochs=1), META).trials) == 4
    with pytest.raises(SetupError, match="no study named 'del-fine'"):
        delete_study(storage, "del-fine")
