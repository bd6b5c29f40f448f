"""Writing a file so that it is whole or absent: temp file beside it, fsync, rename.

The one helper for every file facehpo leaves behind (crop files, saved models, the
final stage's JSON and plots, the HTML report). A crash, a full disk or a signal
mid-write leaves the old file (or none), never half a new one. It raises the OSError;
each caller turns it into its own one-line error (DataError, ModelError, SetupError).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """`write(tmp)` writes the content to the temp path `tmp` (same folder and suffix as
    `path`, so writers that go by the suffix, like Keras' `save`, see the right one);
    then it is fsynced, made readable by other users (workers may run as another user;
    mkstemp makes 0600) and renamed over `path`. The temp file never outlives a failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already after a successful replace
    return path
