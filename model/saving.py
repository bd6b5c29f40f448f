"""A trained model -> a folder with `model.keras` (normalization included) and `config.json`.

The trained model expects normalized input (dataset/pipeline.py does it); the saved
one takes raw 0..255 RGB pixels, (n, 60, 60, 3), because a Normalization layer with
the training statistics is prepended. Both files go through a temp file in the
target folder and a rename, `config.json` last, so a folder with `config.json`
always holds a complete model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import keras

from dataset.atomic import atomic_write
from model.cnn import INPUT_SHAPE
from model.errors import ModelError

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"


def inference_model(model: keras.Model, mean, std) -> keras.Model:
    """`model` with the input normalization (x - mean) / std in front; mean, std (3,)."""
    mean = np.asarray(mean, dtype=np.float32).reshape(3)
    std = np.asarray(std, dtype=np.float32).reshape(3)
    raw = keras.Input(INPUT_SHAPE, name="pixels")  # (batch, 60, 60, 3) 0..255
    norm = keras.layers.Normalization(mean=mean, variance=std ** 2, dtype="float32",
                                      name="normalize")
    return keras.Model(raw, model(norm(raw)), name=f"{model.name}_inference")


def save_model(model: keras.Model, mean, std, path_dir: str | os.PathLike,
               config: dict) -> Path:
    """Write `path_dir/model.keras` and `path_dir/config.json`; return the folder.

    `config` (the resolved configuration, plain JSON values) is written with a
    `normalization` entry holding mean and std. Raises ModelError when the folder
    cannot be created or written (permissions, full disk).
    """
    folder = Path(path_dir)
    text = json.dumps({**config, "normalization": {"mean": [float(v) for v in np.ravel(mean)],
                                                   "std": [float(v) for v in np.ravel(std)]}},
                      indent=2, sort_keys=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"{folder}: cannot create the model folder ({_why(e)})") from e
    full = inference_model(model, mean, std)
    _atomic(folder / MODEL_FILE, lambda tmp: full.save(tmp))
    _atomic(folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
    return folder


def load_model(path_dir: str | os.PathLike) -> tuple[keras.Model, dict]:
    """(model taking raw pixels, config) from a folder written by `save_model`."""
    folder = Path(path_dir)
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (folder / name).is_file():
            raise ModelError(f"{folder}: no {name} (not a saved facehpo model)")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        model = keras.saving.load_model(folder / MODEL_FILE)
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder}: cannot load the saved model ({_why(e)})") from e
    return model, config


def _atomic(path: Path, write) -> None:
    try:
        atomic_write(path, write)
    except OSError as e:
        raise ModelError(f"{path}: cannot write ({_why(e)})") from e


def _why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
