"""ModelConfig -> compiled Keras model: the report's Model 1 and Model 2.

Model 1 (423,244 parameters), on 60x60x3 crops already normalized by the input
pipeline (normalization lives in dataset/pipeline.py, not here, so the parameter
counts stay exactly the report's):

    Conv2D 32 3x3 same ReLU -> MaxPool 2x2 -> Dropout     (60,60,32) (30,30,32)
    Conv2D 64 3x3 same ReLU -> MaxPool 2x2 -> Dropout     (30,30,64) (15,15,64)
    Conv2D 86 3x3 same ReLU -> MaxPool 2x2 -> Dropout     (15,15,86) (7,7,86)
    Flatten -> Dense 84 ReLU -> Dense 2 softmax           (4214) (84) (2)

Model 2 (441,164 parameters, 8,960 of them the non-trainable BatchNormalization
moving statistics) adds BatchNormalization after each pooling layer, after Flatten
and after Dense 84, with Glorot-uniform initialization.

Adam is the optimizer because the search varies only `lr` and `reg`: Adam's
per-parameter step sizes make one learning rate work across the conv and dense
layers without a momentum or schedule to tune as well, so the 2-D search stays 2-D.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

INPUT_SHAPE = (60, 60, 3)
CONV_FILTERS = (32, 64, 86)
DENSE_UNITS = 84
N_CLASSES = 2  # 0 non-face, 1 face


@dataclass(frozen=True)
class ModelConfig:
    variant: int = 1         # 1 = the report's Model 1, 2 = Model 1 + BatchNormalization
    lr: float = 1e-3         # Adam learning rate
    reg: float = 0.0         # L2 factor on every conv and dense kernel
    dropout: float = 0.25    # rate after each pooling layer

    def __post_init__(self):
        if self.variant not in (1, 2):
            raise ValueError(f"model variant must be 1 or 2, got {self.variant!r}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr!r}")
        if not self.reg >= 0:
            raise ValueError(f"L2 regularization must be >= 0, got {self.reg!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


def build_model(cfg: ModelConfig, steps_per_execution: int = 1) -> keras.Model:
    """A compiled model (Adam, sparse categorical cross-entropy, accuracy).

    steps_per_execution > 1 runs that many batches in one TensorFlow call: the
    trainer passes a whole epoch's steps, which drops Keras's per-batch Python
    round trip (same numbers, see model/train.py)."""
    model = architecture(cfg)
    compile_model(model, cfg.lr, steps_per_execution)
    return model


def compile_model(model: keras.Model, lr: float, steps_per_execution: int = 1) -> None:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)


def architecture(cfg: ModelConfig, regularizer=None) -> keras.Model:
    """The uncompiled model; `regularizer` on every kernel replaces L2(cfg.reg)
    (model/compiled.py passes one whose factor is a variable)."""
    bn = cfg.variant == 2
    if regularizer is None and cfg.reg > 0:
        regularizer = keras.regularizers.L2(cfg.reg)
    kernel = dict(kernel_initializer="glorot_uniform", kernel_regularizer=regularizer)
    stack: list[layers.Layer] = [keras.Input(INPUT_SHAPE)]
    for i, filters in enumerate(CONV_FILTERS, 1):
        stack += [layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"conv{i}", **kernel),
                  layers.MaxPooling2D(2, name=f"pool{i}")]
        if bn:
            stack.append(layers.BatchNormalization(name=f"bn{i}"))
        stack.append(layers.Dropout(cfg.dropout, name=f"drop{i}"))
    stack.append(layers.Flatten(name="flatten"))
    if bn:
        stack.append(layers.BatchNormalization(name="bn_flat"))
    stack.append(layers.Dense(DENSE_UNITS, activation="relu", name="dense", **kernel))
    if bn:
        stack.append(layers.BatchNormalization(name="bn_dense"))
    # float32 output even under a mixed_float16 policy (softmax and loss need the range)
    stack.append(layers.Dense(N_CLASSES, activation="softmax", dtype="float32",
                              name="output", **kernel))
    return keras.Sequential(stack, name=f"model{cfg.variant}")
