"""The face / non-face CNN: build (cnn), place on a device (device), fit and evaluate
(train), save with its input normalization (saving).

Importing this package does not import TensorFlow; its modules do, so only the
commands that train pay for it. Nothing under model/ imports Optuna: the study
layer hands in plain configs and Keras callbacks.
"""
from model.errors import ModelError

__all__ = ["ModelError"]
