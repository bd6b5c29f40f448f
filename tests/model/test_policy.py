"""model.train keeps the dtype policy across trials (Keras's clear_session resets it)."""
from __future__ import annotations

import keras

from model.cnn import ModelConfig
from model.train import TrainConfig, train_model


def test_mixed_precision_policy_survives_trials(tiny_crops):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for _ in range(2):  # the second trial starts after the first one's clear_session
            result, model = train_model(tiny_crops, ModelConfig(), TrainConfig(epochs=1, batch_size=8))
            assert result.ok
            assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
            assert model.get_layer("conv1").compute_dtype == "bfloat16"
            assert model.get_layer("output").compute_dtype == "float32"  # softmax stays float32
    finally:
        keras.mixed_precision.set_global_policy("float32")
