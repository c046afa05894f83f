"""Shared plumbing for "pretrained" artefacts: find a verified cached copy, or build one atomically.

The default recipe of an artefact is cached under its plain name (e.g. `digits_cnn`); any other recipe gets its own
folder `<name>-<recipe hash>`, so a quick test run never replaces the real artefact.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prunekit.data.cache import artefact_dir, recipe_digest, verify_artefact, write_artefact
from prunekit.errors import PrunekitError

log = logging.getLogger("prunekit.data")


def recipe_dict(recipe: Any) -> dict[str, Any]:
    """A recipe dataclass as a JSON-ready dict (tuples become lists, as JSON would store them)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(recipe).items()}


def artefact_name(key: str, recipe: Any, default: Any) -> str:
    """`key` for the default recipe, `key-<hash>` for any other."""
    return key if recipe == default else f"{key}-{recipe_digest(recipe_dict(recipe))}"


def check_recipe(recipe: Any, cls: type) -> None:
    """Raise a PrunekitError unless `recipe` is an instance of the recipe dataclass `cls`."""
    if not isinstance(recipe, cls):
        raise PrunekitError(f"recipe must be a {cls.__name__} (e.g. dataclasses.replace of the default), "
                            f"got {type(recipe).__name__}")


def ensure_artefact(key: str, recipe: Any, default: Any, produce: Callable[[Path], Mapping[str, Any]]) -> Path:
    """Return the folder of a verified artefact, building it with `produce(tmp_folder)` when needed.

    `produce` writes the files and returns the manifest fields it measured (`data`, `metrics`, `params`, ...).
    """
    name = artefact_name(key, recipe, default)
    rd = recipe_dict(recipe)
    manifest = verify_artefact(name, rd)
    if manifest is not None:
        return artefact_dir(name)
    log.info("building %s (first use; it is cached afterwards)", name)
    return write_artefact(name, produce, {"recipe": rd})
