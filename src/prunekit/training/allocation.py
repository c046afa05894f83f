"""Per-layer sparsity allocation for gradual / iterative pruning: `AllocationConfig` and `layer_sparsities`.

    from prunekit.training.allocation import AllocationConfig, layer_sparsities
    sparsities = layer_sparsities(model, ["conv1", "fc"], 0.9, AllocationConfig(kind="erk"))

Kinds: uniform (every layer at the target), erk (RigL's Erdős–Rényi-Kernel), lamp (one global LAMP threshold on the
current weights) and sensitivity (the curves `prunekit analyze` measured: the solver equalises the predicted metric
drop). The maths lives in `prunekit.importance.allocation`; this module adds the model plumbing and the curves file.
Whatever the kind, the parameter-weighted mean over `layers` equals the target (to 1e-9) and each value is in [0, 1).

The curves file (`sensitivity.json` written by `prunekit analyze`, format "prunekit-sensitivity") holds the grid of
sparsities, the dense metric, whether higher is better, and per layer its weight count and metric per grid point.
`allocation.json` (format "prunekit-allocation") embeds the same curves, so either file works as `file`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from torch import nn

from prunekit.config.base import Config
from prunekit.errors import PrunekitError, choices_text, suggest
from prunekit.importance.allocation import erk_sparsities, lamp_sparsities, sensitivity_sparsities

__all__ = ["KINDS", "AllocationConfig", "SensitivityCurves", "check_reachable", "layer_sparsities", "load_curves"]

KINDS = ("uniform", "erk", "lamp", "sensitivity")
SENSITIVITY_FORMAT = "prunekit-sensitivity"
ALLOCATION_FORMAT = "prunekit-allocation"


@dataclass
class SensitivityCurves:
    """Measured curves: metric with one layer pruned alone at each grid sparsity (see the module docstring)."""

    sparsities: list[float]
    dense: float
    metric: str = "accuracy"
    higher_is_better: bool = True
    layers: dict[str, list[float]] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (format "prunekit-sensitivity", version 1)."""
        return {
            "format": SENSITIVITY_FORMAT, "version": 1, "metric": self.metric,
            "higher_is_better": self.higher_is_better, "dense": self.dense, "sparsities": list(self.sparsities),
            "layers": {n: {"params": self.params[n], "metric": list(v)} for n, v in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "sensitivity file") -> SensitivityCurves:
        """Parse the JSON form (an allocation.json's embedded curves too); malformed input -> PrunekitError."""
        if isinstance(data, dict) and data.get("format") == ALLOCATION_FORMAT:
            data = data.get("sensitivity")
        if not isinstance(data, dict) or data.get("format") != SENSITIVITY_FORMAT:
            raise PrunekitError(f"{source} is not a prunekit sensitivity file (format {SENSITIVITY_FORMAT!r}); "
                                "write one with `prunekit analyze`")
        try:
            grid = [float(s) for s in data["sparsities"]]
            layers = {str(n): [float(v) for v in e["metric"]] for n, e in data["layers"].items()}
            params = {str(n): int(e["params"]) for n, e in data["layers"].items()}
            out = cls(sparsities=grid, dense=float(data["dense"]), metric=str(data.get("metric", "accuracy")),
                      higher_is_better=bool(data.get("higher_is_better", True)), layers=layers, params=params)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PrunekitError(f"{source} is malformed ({type(exc).__name__}: {exc}); "
                                "write it again with `prunekit analyze`") from None
        if any(len(v) != len(grid) for v in layers.values()) or not layers:
            raise PrunekitError(f"{source} is malformed: every layer needs one metric per sparsity")
        return out


def load_curves(path: str | Path) -> SensitivityCurves:
    """Read a sensitivity.json / allocation.json; a missing, unreadable or corrupt file -> PrunekitError."""
    p = Path(path)
    if not p.is_file():
        raise PrunekitError(f"allocation file {str(path)!r} does not exist; write it with "
                            "`prunekit analyze --model SPEC --data SPEC --out DIR` (DIR/sensitivity.json)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrunekitError(f"allocation file {str(path)!r} is not valid JSON ({exc})") from None
    return SensitivityCurves.from_dict(data, source=f"allocation file {str(path)!r}")


class AllocationConfig(Config):
    """How a global sparsity is split across layers: uniform, erk, lamp or sensitivity (from a curves file)."""

    kind: str = Field(
        "uniform", description="uniform: every layer at the target; erk: density proportional to "
        "(sum of dims) / (product of dims) (RigL); lamp: one global LAMP-score threshold on the current weights; "
        "sensitivity: the curves of `prunekit analyze` (equal predicted metric drop per layer; needs file)."
    )
    file: str | None = Field(
        None, description="The sensitivity.json (or allocation.json) `prunekit analyze` wrote; required for "
        "kind sensitivity, refused otherwise."
    )
    erk_power: float = Field(
        1.0, gt=0.0, description="ERK only: exponent on (sum of dims) / (product of dims) (RigL's erk_power_scale; "
        "0 < p; smaller spreads sparsity more evenly)."
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in KINDS:
            raise PrunekitError(f"unknown allocation kind {value!r}; choose one of {choices_text(KINDS)}."
                                f"{suggest(value, KINDS)}")
        return value

    @model_validator(mode="after")
    def _file(self) -> AllocationConfig:
        if self.kind == "sensitivity":
            if not self.file:
                raise PrunekitError("allocation kind 'sensitivity' needs file: the sensitivity.json written by "
                                    "`prunekit analyze --out DIR`")
            load_curves(self.file)  # missing / corrupt files fail at validation, before any training
        elif self.file is not None:
            raise PrunekitError(f"allocation file is only used by kind 'sensitivity', not {self.kind!r}; "
                                "remove file or set kind: sensitivity")
        if self.erk_power != 1.0 and self.kind != "erk":
            raise PrunekitError(f"erk_power applies to kind 'erk' only, not {self.kind!r}")
        return self


def check_reachable(alloc: AllocationConfig | None, target: float) -> None:
    """Refuse, before any training, a final target that a sensitivity file's grid cannot reach."""
    if alloc is not None and alloc.kind == "sensitivity":
        top = load_curves(alloc.file).sparsities[-1]  # type: ignore[arg-type]
        if target > top + 1e-12:
            raise PrunekitError(f"sparsity {target:g} is above the largest sparsity {top:g} analysed in "
                                f"{alloc.file!r}; run `prunekit analyze` with higher --sparsities")


def _weights(model: nn.Module, layers: list[str]) -> dict[str, Any]:
    modules = dict(model.named_modules())
    out = {}
    for name in layers:
        module = modules.get(name)
        weight = getattr(module, "weight", None) if module is not None else None
        if weight is None:
            known = [n for n, m in modules.items() if n and getattr(m, "weight", None) is not None]
            raise PrunekitError(f"allocation: layer {name!r} is not a module with a weight in this model."
                                f"{suggest(name, known)}")
        out[name] = weight
    return out


def layer_sparsities(model: nn.Module, layers: list[str], target: float, alloc: AllocationConfig | None,
                     *, max_sparsity: float = 1.0) -> dict[str, float]:
    """Per-layer sparsities for `layers` (module names) whose parameter-weighted mean equals `target`.

    `max_sparsity` caps every layer (a Pruner passes 1 - min_density): layers the kind puts above it are clamped
    to it and the rest is solved again over the other layers (like RigL's dense layers), so the mean stays exact.

    Raises:
        PrunekitError: an unknown layer, a target outside [0, 1) or above `max_sparsity`, a layer missing from
            the curves file, or a target the kind cannot reach (e.g. above the largest analysed sparsity).
    """
    if not layers:
        raise PrunekitError("allocation needs at least one layer")
    if not 0.0 <= float(target) < 1.0:
        raise PrunekitError(f"allocation target sparsity {target!r} must be in [0, 1)")
    target = float(target)
    if target > max_sparsity + 1e-12:
        raise PrunekitError(f"allocation target sparsity {target:g} is above the per-layer cap {max_sparsity:g} "
                            "(1 - min_density); lower the target or min_density")
    weights = _weights(model, list(layers))
    kind = alloc.kind if alloc is not None else "uniform"
    if kind == "uniform" or target == 0.0:
        return {n: target for n in layers}
    file = alloc.file if alloc is not None else None
    curves = load_curves(file) if kind == "sensitivity" and file else None
    if curves is not None:
        missing = [n for n in layers if n not in curves.layers]
        if missing:
            raise PrunekitError(f"allocation file {file!r} has no curve for layer {missing[0]!r} "
                                f"(analysed: {choices_text(curves.layers)}); run `prunekit analyze` on this model")
    params = {n: float(weights[n].numel()) for n in layers}
    fixed: dict[str, float] = {}
    while True:
        free = [n for n in layers if n not in fixed]
        rest = (target * sum(params.values()) - sum(params[n] * v for n, v in fixed.items()))
        sub_target = min(max(rest / sum(params[n] for n in free), 0.0), max_sparsity)
        values = dict(zip(free, _solve(kind, alloc, weights, free, sub_target, curves), strict=True))
        over = {n for n, v in values.items() if v > max_sparsity + 1e-12}
        if not over:
            break
        fixed.update({n: max_sparsity for n in over})
    return {n: float(fixed.get(n, values.get(n, 0.0))) for n in layers}


def _solve(kind: str, alloc: AllocationConfig | None, weights: dict[str, Any], layers: list[str], target: float,
           curves: SensitivityCurves | None) -> list[float]:
    if target == 0.0:
        return [0.0] * len(layers)
    if kind == "erk":
        return erk_sparsities([tuple(weights[n].shape) for n in layers], target,
                              power=alloc.erk_power)  # type: ignore[union-attr]
    if kind == "lamp":
        return lamp_sparsities([weights[n].detach() for n in layers], target)
    assert curves is not None  # kind sensitivity (validated)
    return sensitivity_sparsities(
        curves.sparsities, [curves.layers[n] for n in layers], curves.dense,
        [float(weights[n].numel()) for n in layers], target, higher_is_better=curves.higher_is_better)
