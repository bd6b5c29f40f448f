"""study/queue.py: the Optuna private API it relies on, checked loudly, and the pop itself.

If one of these fails after an Optuna upgrade, read study/queue.py's docstring: the
exact-budget pop or the reasoned stale check needs another way in that release.
"""
from __future__ import annotations

import inspect
import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from study import storage as db
from study.queue import Heartbeat, NothingWaiting, PopGuard, Queue, pop_only

CHANGED = f"Optuna {optuna.__version__} changed %s, which study/queue.py relies on: re-check it"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request, tmp_path):
    url = f"sqlite:///{tmp_path}/q.db" if request.param == "sqlite" else request.getfixturevalue("fresh_pg")
    s = db.open_storage(db.StorageConfig(url=url, heartbeat_interval=1, grace_period=2), create=True)
    yield s
    s.engine.dispose()


def _study(storage, n: int = 0) -> optuna.Study:
    study = optuna.create_study(study_name="q", storage=storage, direction="maximize")
    for i in range(n):
        study.enqueue_trial({"x": float(i)})
    return db.load(storage, "q")


def test_the_private_methods_are_there_with_the_signatures_we_override():
    rdb = optuna.storages.RDBStorage
    create = getattr(rdb, "_create_new_trial", None)
    assert create is not None, CHANGED % "RDBStorage._create_new_trial (gone)"
    assert list(inspect.signature(create).parameters)[:3] == ["self", "study_id", "template_trial"], \
        CHANGED % "RDBStorage._create_new_trial's parameters"
    stale = getattr(rdb, "_get_stale_trial_ids", None)
    assert stale is not None and list(inspect.signature(stale).parameters) == ["self", "study_id"], \
        CHANGED % "RDBStorage._get_stale_trial_ids"
    assert issubclass(type(db.open_storage(db.StorageConfig(url="sqlite:///:memory:"), create=True)), PopGuard)


def test_ask_inside_pop_only_takes_waiting_trials_and_never_creates_one(storage):
    """Both routes Optuna creates trials by (the cached storage behind a loaded study, and
    the storage itself) come through the overridden method."""
    study = _study(storage, 2)
    queue = Queue(storage, study)
    taken = [queue.pop(), queue.pop()]
    assert [t.trial.number for t in taken] == [0, 1]
    assert [storage.get_trial(t.trial_id).state for t in taken] == [TrialState.RUNNING] * 2
    assert queue.pop() is None, CHANGED % "how Study.ask creates a trial when none is WAITING"
    with pop_only(storage), pytest.raises(NothingWaiting):
        storage.create_new_trial(queue.study_id)
    assert len(study.get_trials(deepcopy=False)) == 2  # no row written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert study.ask().number == 2  # outside pop_only, Optuna's usual ask
    study.enqueue_trial({"x": 9.0})  # from a template: allowed inside too
    with pop_only(storage):
        study.enqueue_trial({"x": 10.0})
    assert queue.count((TrialState.WAITING,)) == 2


def test_stale_ids_are_what_fail_stale_needs(storage):
    study = _study(storage, 1)
    queue = Queue(storage, study)
    taken = queue.pop()
    storage.record_heartbeat(taken.trial_id)
    assert storage._get_stale_trial_ids(queue.study_id) == []
    time.sleep(3)
    assert storage._get_stale_trial_ids(queue.study_id) == [taken.trial_id], \
        CHANGED % "RDBStorage._get_stale_trial_ids"
    assert queue.fail_stale() == 1
    failed, retry = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"].startswith("no heartbeat")
    assert retry.state == TrialState.WAITING and "fail_reason" not in retry.user_attrs
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(retry) == [failed.number]
    assert queue.retried(taken.trial_id)


def test_heartbeat_keeps_a_long_trial_from_going_stale(storage):
    study = _study(storage, 1)
    queue = Queue(storage, study)
    taken = queue.pop()
    with Heartbeat(storage, taken.trial_id):
        time.sleep(3)  # past the grace period
        assert storage._get_stale_trial_ids(queue.study_id) == []
    time.sleep(3)
    assert storage._get_stale_trial_ids(queue.study_id) == [taken.trial_id]  # stopped with the block
