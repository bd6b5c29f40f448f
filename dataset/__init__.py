"""FDDB folds -> face / non-face crops in one .npz file with a JSON sidecar.

Nothing here imports TensorFlow at import time; `dataset.pipeline` does, lazily.
"""
from dataset.archive import CropSet, load_crops, save_crops
from dataset.errors import DataError

__all__ = ["CropSet", "DataError", "load_crops", "save_crops"]
