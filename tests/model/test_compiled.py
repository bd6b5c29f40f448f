"""model/compiled.py: the kept compiled pack gives the same runs as a new one, without
tracing again."""
from __future__ import annotations

import pytest

from model import compiled
from model.cnn import ModelConfig
from model.packed import PackedCNN
from model.train import TrainConfig, train, train_model, train_pack
from tests.model.test_train import metrics, raise_at

TWO = TrainConfig(epochs=2, batch_size=8, seed=5)


@pytest.fixture
def traces(monkeypatch):
    """How many times a training step was traced (its Python body runs only then)."""
    count = [0]
    original = PackedCNN.train_step

    def counted(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)
    monkeypatch.setattr(PackedCNN, "train_step", counted)
    return count


@pytest.mark.parametrize("variant", [1, 2])
def test_kept_model_runs_like_a_new_one(tiny_crops, variant):
    before = ModelConfig(variant=variant, lr=1e-2, reg=1e-1)
    cfg = ModelConfig(variant=variant, lr=3e-3, reg=0.0)  # reg 0 after reg > 0: the factor resets
    train(tiny_crops, before, TrainConfig(epochs=2, batch_size=8, seed=1))  # leaves moved weights,
    kept = train(tiny_crops, cfg, TWO)                                     # Adam moments, seeds
    compiled.forget()
    new = train(tiny_crops, cfg, TWO)
    assert metrics(kept) == metrics(new)


def test_second_run_does_not_trace_again(tiny_crops, traces):
    cfg = ModelConfig(lr=1e-3, reg=1e-3)
    compiled.forget()
    train(tiny_crops, cfg, TWO)
    pack, count = compiled.current(), traces[0]
    assert count >= 1, "no trace seen: this test no longer counts traces"
    train(tiny_crops, ModelConfig(lr=2e-4, reg=3.0), TrainConfig(epochs=1, batch_size=8, seed=9))
    assert compiled.current() is pack and traces[0] == count


def test_a_different_graph_gets_a_new_model(tiny_crops):
    train(tiny_crops, ModelConfig(), TWO)
    first = compiled.current()
    train(tiny_crops, ModelConfig(variant=2), TWO)
    second = compiled.current()
    train(tiny_crops, ModelConfig(variant=2), TrainConfig(epochs=1, batch_size=5))  # other steps
    third = compiled.current()
    train_pack(tiny_crops, [(ModelConfig(variant=2), 1), (ModelConfig(variant=2), 2)],
               TrainConfig(epochs=1, batch_size=5))  # another K
    assert len({id(first), id(second), id(third), id(compiled.current())}) == 4


def test_failed_runs_leave_the_kept_model_usable(tiny_crops):
    cfg = ModelConfig(reg=1e-2)
    diverged = train(tiny_crops, ModelConfig(lr=1e6), TrainConfig(epochs=3, batch_size=8))
    assert not diverged.ok
    kept = train(tiny_crops, cfg, TWO)
    compiled.forget()
    assert metrics(kept) == metrics(train(tiny_crops, cfg, TWO))


def test_train_model_returns_a_model_of_its_own(tiny_crops):
    _, model = train_model(tiny_crops, ModelConfig(), TWO)
    assert model is not compiled.current() and model.name == "model1"
    before = [w.copy() for w in model.get_weights()]
    train(tiny_crops, ModelConfig(lr=1e-2), TWO)  # the kept pack moves on, the model does not
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))


def test_interrupted_run_leaves_the_kept_model_usable(tiny_crops):
    class Stop(Exception):
        pass

    cfg = ModelConfig(lr=2e-3)
    with pytest.raises(Stop):
        train(tiny_crops, cfg, TWO, on_epoch=raise_at(Stop()))
    kept = train(tiny_crops, cfg, TWO)
    compiled.forget()
    assert metrics(kept) == metrics(train(tiny_crops, cfg, TWO))


def test_the_last_two_graphs_stay_kept(tiny_crops, traces):
    """A stage's short last pack does not cost the next stage's full packs a new trace."""
    compiled.forget()
    two = [(ModelConfig(), 1), (ModelConfig(), 2)]
    train_pack(tiny_crops, two, TWO)
    full = compiled.current()
    train(tiny_crops, ModelConfig(), TWO)  # K = 1: another graph
    count = traces[0]
    train_pack(tiny_crops, two, TWO)
    assert compiled.current() is full and traces[0] == count
