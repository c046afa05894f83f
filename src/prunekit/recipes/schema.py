"""Recipe schema and loader: `yaml.safe_load` only, every stage validated by its method's pydantic config.

Errors name the file, the stage index, the key, the bad value and the valid choices, in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from prunekit.config import Config
from prunekit.errors import PrunekitError, choices_text, suggest
from prunekit.registry import METHODS

_TOP_KEYS = ("stages", "description")


@dataclass(frozen=True)
class Stage:
    """One validated stage: the method's name and its frozen config."""

    method: str
    config: Config

    def to_dict(self) -> dict[str, Any]:
        """The stage as plain data with every field resolved (defaults included)."""
        return {"method": self.method, **self.config.model_dump(mode="json")}


@dataclass(frozen=True)
class Recipe:
    """A validated list of stages, applied in order."""

    stages: tuple[Stage, ...]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stages": [s.to_dict() for s in self.stages]}
        if self.description:
            out = {"description": self.description, **out}
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def build_config(cls: type[Config], data: dict[str, Any], where: str = "config") -> Config:
    """Validate `data` into `cls`, turning pydantic's report into one PrunekitError line naming key and value."""
    try:
        return cls(**data)
    except ValidationError as exc:
        raise PrunekitError(f"{where}: {_explain(exc, cls, data)}") from None
    except TypeError as exc:  # e.g. non-string keys
        raise PrunekitError(f"{where}: {exc}") from None


def _explain(exc: ValidationError, cls: type[Config], data: dict[str, Any]) -> str:
    errors = exc.errors()
    # An unknown key (often a typo) explains the other errors best, so it is reported first.
    err = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in err.get("loc", ()))
    fields = list(cls.model_fields)
    if err.get("type") == "extra_forbidden":
        return f"unknown key {loc!r}.{suggest(loc, fields)} Valid keys: {choices_text(fields)}"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if not loc:  # a cross-field rule
        return msg
    value = data.get(loc.split(".")[0], err.get("input"))
    if err.get("type") == "missing":
        return f"key {loc!r} is required"
    return f"key {loc!r}: {value!r} is invalid: {msg}"


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate already-parsed recipe data (a mapping with `stages:`) into a Recipe."""
    if not isinstance(data, dict):
        raise PrunekitError(f"{source}: a recipe is a mapping with a 'stages:' list, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            raise PrunekitError(
                f"{source}: unknown top-level key {key!r}.{suggest(str(key), _TOP_KEYS)} "
                f"Valid keys: {choices_text(_TOP_KEYS)}"
            )
    stages_data = data.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        raise PrunekitError(f"{source}: 'stages' must be a non-empty list of {{method: NAME, ...}} entries")
    stages = []
    for i, raw in enumerate(stages_data):
        where = f"{source}: stage {i}"
        if not isinstance(raw, dict) or "method" not in raw:
            raise PrunekitError(f"{where}: each stage is a mapping with a 'method' key, got {raw!r}")
        raw = dict(raw)
        name = raw.pop("method")
        if not isinstance(name, str) or name not in METHODS:
            valid = METHODS.names()
            raise PrunekitError(
                f"{where}: unknown method {name!r}.{suggest(str(name), valid)} Valid methods: {choices_text(valid)}"
            )
        cls = METHODS.get(name).config_cls
        stages.append(Stage(name, build_config(cls, raw, where=f"{where} ({name})")))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise PrunekitError(f"{source}: 'description' must be a string")
    return Recipe(tuple(stages), description)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file (safe_load only; never evaluates code)."""
    path = Path(path)
    if not path.is_file():
        raise PrunekitError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PrunekitError(f"{path}: not valid YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise PrunekitError(f"{path}: not a text file (expected a YAML recipe)") from None
    return parse_recipe(data, source=str(path))
