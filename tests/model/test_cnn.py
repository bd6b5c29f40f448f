"""The report's architectures, checked against its parameter counts and shapes (no training)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import pytest

from model.cnn import ModelConfig, build_model

SHAPES = [(60, 60, 32), (30, 30, 32), (30, 30, 64), (15, 15, 64), (15, 15, 86), (7, 7, 86),
          (4214,), (84,), (2,)]


def shapes_without(model, *kinds):
    return [tuple(layer.output.shape[1:]) for layer in model.layers
            if not isinstance(layer, kinds)]


def test_model1_matches_the_report():
    m = build_model(ModelConfig(variant=1))
    assert m.count_params() == 423_244
    assert not m.non_trainable_weights
    assert shapes_without(m, keras.layers.Dropout) == SHAPES
    assert m.input_shape == (None, 60, 60, 3)


def test_model2_matches_the_report():
    m = build_model(ModelConfig(variant=2))
    assert m.count_params() == 441_164
    assert sum(int(w.numpy().size) for w in m.non_trainable_weights) == 8_960
    assert shapes_without(m, keras.layers.Dropout, keras.layers.BatchNormalization) == SHAPES
    after = [type(m.layers[i - 1]).__name__ for i, layer in enumerate(m.layers)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert after == ["MaxPooling2D"] * 3 + ["Flatten", "Dense"]


@pytest.mark.parametrize("variant", [1, 2])
def test_l2_on_every_kernel_and_only_there(variant):
    m = build_model(ModelConfig(variant=variant, reg=0.01))
    weighted = [layer for layer in m.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert len(weighted) == 5
    for layer in weighted:
        assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
        assert layer.kernel_regularizer.l2 == pytest.approx(0.01)
        assert layer.bias_regularizer is None
    assert len(m.losses) == 5
    assert all(layer.kernel_regularizer is None
               for layer in build_model(ModelConfig(variant=variant)).layers
               if hasattr(layer, "kernel_regularizer"))


def test_compiled_with_adam_and_float32_output():
    m = build_model(ModelConfig(lr=0.02))
    assert isinstance(m.optimizer, keras.optimizers.Adam)
    assert float(m.optimizer.learning_rate) == pytest.approx(0.02)
    assert m.loss == "sparse_categorical_crossentropy"
    assert m.layers[-1].dtype_policy.compute_dtype == "float32"
    assert m.layers[-1].activation is keras.activations.softmax


@pytest.mark.parametrize("kwargs, words", [
    (dict(variant=3), "variant must be 1 or 2"), (dict(lr=0.0), "learning rate"),
    (dict(lr=-1e-3), "learning rate"), (dict(reg=-1e-4), "L2"), (dict(dropout=1.0), "dropout"),
    (dict(lr=float("nan")), "learning rate")])
def test_bad_model_config_is_one_line(kwargs, words):
    with pytest.raises(ValueError, match=words) as e:
        ModelConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_model_package_never_imports_optuna_and_loads_tensorflow_lazily():
    code = ("import sys, model\n"
            "assert 'tensorflow' not in sys.modules, 'model/__init__ imported tensorflow'\n"
            "import model.cnn, model.device, model.saving, model.train, model.errors, dataset.pipeline\n"
            "assert 'tensorflow' in sys.modules\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'optuna_integration'))\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]


def test_output_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        m = build_model(ModelConfig(variant=2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert m.layers[0].compute_dtype == "float16"
    assert m.layers[-1].output.dtype == "float32"
    assert m.layers[-2].output.dtype == "float16"
