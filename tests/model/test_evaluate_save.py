"""evaluate() and save_model(): one model trained for one epoch, shared by the tests."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataset.pipeline import normalized
from model.cnn import ModelConfig
from model.errors import ModelError
from model.saving import CONFIG_FILE, MODEL_FILE, load_model, save_model
from model.train import TrainConfig, evaluate, train_model


@pytest.fixture(scope="module")
def trained(tiny_crops):
    result, model = train_model(tiny_crops, ModelConfig(variant=2, reg=1e-3),
                                TrainConfig(epochs=1, batch_size=8))
    assert result.ok
    return model


def test_confusion_matches_labels_and_keras(trained, tiny_crops):
    ev = evaluate(trained, tiny_crops, "test")
    (tn, fp), (fn, tp) = ev.confusion
    y = tiny_crops.part("test")[1]
    assert (tn + fp, fn + tp) == ((y == 0).sum(), (y == 1).sum())
    assert ev.accuracy == pytest.approx((tn + tp) / len(y))
    x_norm, y_norm = normalized(tiny_crops, "test")
    pred = trained.predict(x_norm, verbose=0).argmax(axis=1)
    assert tp == int(((pred == 1) & (y == 1)).sum()) and fp == int(((pred == 1) & (y == 0)).sum())
    loss, acc = trained.evaluate(x_norm, y_norm, verbose=0)
    assert ev.loss == pytest.approx(loss, rel=1e-4) and ev.accuracy == pytest.approx(acc)
    rates = ev.rates()
    for row, counts in zip(rates, ev.confusion):
        assert sum(row) == pytest.approx(1.0) and row[0] == pytest.approx(counts[0] / sum(counts))
    assert ev.to_dict()["confusion"] == [[tn, fp], [fn, tp]]


def test_saved_model_takes_raw_pixels(trained, tiny_crops, tmp_path):
    folder = save_model(trained, tiny_crops.mean, tiny_crops.std, tmp_path / "final" / "model",
                        {"model": 2, "lr": 1e-3})
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, MODEL_FILE]  # no temp files
    loaded, config = load_model(folder)
    assert config["model"] == 2
    assert config["normalization"]["mean"] == pytest.approx(tiny_crops.meta["mean"])
    raw, _ = tiny_crops.part("test")  # uint8 0..255
    expected = trained.predict(normalized(tiny_crops, "test")[0], verbose=0)
    np.testing.assert_allclose(loaded.predict(raw, verbose=0), expected, rtol=1e-4, atol=1e-5)
    assert evaluate(loaded, tiny_crops, raw_pixels=True) == evaluate(trained, tiny_crops)
    json.loads((folder / CONFIG_FILE).read_text())


def test_save_again_replaces_files(trained, tiny_crops, tmp_path):
    for lr in (1e-3, 2e-3):
        save_model(trained, tiny_crops.mean, tiny_crops.std, tmp_path, {"lr": lr})
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["lr"] == 2e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, MODEL_FILE]


def test_unwritable_folder_is_a_model_error(trained, tiny_crops, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match="cannot create the model folder") as e:
        save_model(trained, tiny_crops.mean, tiny_crops.std, blocker / "model", {})
    assert "\n" not in str(e.value)


def test_load_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not a saved facehpo model"):
        load_model(tmp_path)
