"""Atomic file writes (standard library only, import layer 0): a temp file in the same folder, flushed, fsynced,
then `os.replace`d, so a reader never sees a half-written file and a failure leaves the old file untouched.
`prunekit.export` re-exports these; low layers (training checkpoints) import them from here."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file + rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text to `path` through a temp file + rename."""
    atomic_write_bytes(path, text.encode("utf-8"))
