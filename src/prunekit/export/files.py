"""Atomic file and folder writes: never leave a half-written model, report or checkpoint behind.

A file is written to a temp file in the same folder, flushed, then `os.replace`d. An output folder is built as a
hidden temp folder beside the target and renamed into place when complete; with `overwrite`, the old folder is moved
aside first and deleted only after the new one is in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from prunekit._atomic import atomic_write_bytes, atomic_write_text
from prunekit.errors import PrunekitError


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Raise if `out` exists (and overwrite is off) or its parent is missing; return it as a Path."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise PrunekitError(f"output folder {str(out)!r} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise PrunekitError(f"output {str(out)!r} exists and is not a folder")
    return out


@contextlib.contextmanager
def output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder to fill; on success it atomically becomes `out`, on error it is removed.

    Raises:
        PrunekitError: if `out` exists and `overwrite` is False.
    """
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_weights(model: nn.Module, folder: Path) -> list[str]:
    """Save a finalized model into `folder`; return the file names written.

    Hugging Face models are written with `save_pretrained` (config + model.safetensors, loadable with
    `from_pretrained`); any other model as `model.safetensors` (shared tensors stored once).
    """
    from prunekit.masks import has_masks

    if has_masks(model):
        raise PrunekitError("model still carries masks: call prunekit.finalize(model) before saving")
    before = set(os.listdir(folder))
    if hasattr(model, "save_pretrained") and hasattr(model, "config"):
        model.save_pretrained(str(folder), safe_serialization=True)
    else:
        from safetensors.torch import save_model

        save_model(model, str(folder / "model.safetensors"))
    return sorted(set(os.listdir(folder)) - before)
