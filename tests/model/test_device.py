"""model/device.py on the CPU-only machines (the GPU branches need a GPU host)."""
from __future__ import annotations

import logging

import keras
import pytest
import tensorflow as tf

from model import device

pytestmark = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                                reason="CPU-only checks; a GPU is visible here")


@pytest.mark.parametrize("flag, env", [(True, None), (None, "1")])
def test_mixed_precision_is_ignored_on_cpu(flag, env, monkeypatch, caplog):
    if env is None:
        monkeypatch.delenv(device.MIXED_PRECISION_ENV, raising=False)
    else:
        monkeypatch.setenv(device.MIXED_PRECISION_ENV, env)
    with caplog.at_level(logging.WARNING, logger="model.device"):
        assert device.configure(mixed_precision=flag) == "CPU"
    assert "mixed precision ignored: no GPU" in caplog.text
    assert keras.mixed_precision.global_policy().name == "float32"
    assert device.describe() == "CPU"


def test_plain_configure_is_quiet(monkeypatch, caplog):
    monkeypatch.delenv(device.MIXED_PRECISION_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="model.device"):
        assert device.configure() == "CPU"
    assert not caplog.records
