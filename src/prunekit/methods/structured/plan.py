"""`PruningPlan`: the plain-JSON record of a structured pruning, replayable on a fresh copy of the base model.

A plan is a list of steps (one per structured stage). A step lists, for each group that lost channels, the slices
removed: (tensor name, dim, indices). It also records every touched tensor's shape before the step, so replaying on
the wrong model fails with a clear message instead of slicing the wrong thing. Replay is `index_select` on the same
data with the same indices, so the weights come out bit-identical.

    plan = get_plan(model)                      # after prunekit.prune(model, {"stages": [{"method": "structured", ...}]})
    Path("plan.json").write_text(plan.to_json())
    fresh = build_base_model()
    apply_plan(fresh, PruningPlan.from_json(Path("plan.json").read_text()))
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.graph import get_tensor, remove_slices

PLAN_FORMAT = "prunekit.structured_plan"
PLAN_VERSION = 1


@dataclass(frozen=True)
class PlanSlice:
    """Indices removed from one dim of one parameter or buffer."""

    tensor: str
    dim: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class PlanGroup:
    """One group's removal: its name, channel counts before/after, and the slices removed."""

    name: str
    channels_before: int
    channels_after: int
    removed: tuple[PlanSlice, ...]


@dataclass
class PlanStep:
    """The removals of one structured stage, the shapes of the touched tensors before it, and the Hugging Face
    config fields the stage set (`{"intermediate_size": 96}`; empty for other models or per-layer sizes)."""

    groups: list[PlanGroup] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    config: dict[str, int] = field(default_factory=dict)

    def removals(self) -> dict[str, dict[int, list[int]]]:
        """{tensor: {dim: sorted indices}} over every group of the step."""
        out: dict[str, dict[int, set[int]]] = {}
        for g in self.groups:
            for s in g.removed:
                out.setdefault(s.tensor, {}).setdefault(s.dim, set()).update(s.indices)
        return {t: {d: sorted(ix) for d, ix in dims.items()} for t, dims in out.items()}


@dataclass
class PruningPlan:
    """Structured pruning as data: steps of removed slices. `to_json` / `from_json` round-trip exactly."""

    steps: list[PlanStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "steps": [
                {
                    "shapes": step.shapes,
                    "groups": [
                        {
                            "name": g.name,
                            "channels_before": g.channels_before,
                            "channels_after": g.channels_after,
                            "removed": [{"tensor": s.tensor, "dim": s.dim, "indices": list(s.indices)} for s in g.removed],
                        }
                        for g in step.groups
                    ],
                    **({"config": dict(step.config)} if step.config else {}),
                }
                for step in self.steps
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> PruningPlan:
        """Inverse of `to_dict`; raises PrunekitError naming what is malformed."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise PrunekitError(f"not a structured pruning plan (expected format {PLAN_FORMAT!r})")
        if data.get("version") != PLAN_VERSION:
            raise PrunekitError(f"plan version {data.get('version')!r} is not supported (this prunekit reads {PLAN_VERSION})")
        try:
            steps = []
            for raw in data["steps"]:
                groups = [
                    PlanGroup(
                        str(g["name"]), int(g["channels_before"]), int(g["channels_after"]),
                        tuple(PlanSlice(str(s["tensor"]), int(s["dim"]), tuple(int(i) for i in s["indices"]))
                              for s in g["removed"]),
                    )
                    for g in raw["groups"]
                ]
                shapes = {str(k): [int(v) for v in shape] for k, shape in raw["shapes"].items()}
                config = {str(k): int(v) for k, v in raw.get("config", {}).items()}
                steps.append(PlanStep(groups, shapes, config))
        except (KeyError, TypeError, ValueError) as exc:
            raise PrunekitError(f"malformed pruning plan: {type(exc).__name__}: {exc}") from None
        return cls(steps)

    def to_json(self, indent: int | None = None) -> str:
        """The plan as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        """Parse `to_json` output."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PrunekitError(f"pruning plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @property
    def channels_removed(self) -> int:
        """Channels removed over all steps and groups."""
        return sum(g.channels_before - g.channels_after for s in self.steps for g in s.groups)


def apply_plan(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Replay `plan` on `model` (a fresh copy of the base model) in place and return it; a step's Hugging Face
    config fields are set on `model.config`, so the result saves with `save_pretrained` like the pruned model.

    Raises:
        PrunekitError: a tensor of the plan is missing or has another shape than when the plan was made.
    """
    for i, step in enumerate(plan.steps):
        if step.config and not hasattr(model, "config"):
            raise PrunekitError(f"plan step {i} edits a Hugging Face config ({', '.join(step.config)}), "
                                f"but {type(model).__name__} has no `config`")
        for name, shape in step.shapes.items():
            tensor = get_tensor(model, name)
            if list(tensor.shape) != shape:
                raise PrunekitError(
                    f"plan step {i}: {name} has shape {list(tensor.shape)}, the plan expects {shape} "
                    "(replay a plan on the same base model it was made for)"
                )
        remove_slices(model, step.removals())
        for key, value in step.config.items():
            setattr(model.config, key, value)
    return model


_PLANS: weakref.WeakKeyDictionary[nn.Module, PruningPlan] = weakref.WeakKeyDictionary()


def record_step(model: nn.Module, step: PlanStep) -> PruningPlan:
    """Append a step to the plan kept for `model` (created on first use) and return the plan."""
    plan = _PLANS.setdefault(model, PruningPlan())
    plan.steps.append(step)
    return plan


def get_plan(model: nn.Module) -> PruningPlan | None:
    """The plan of every structured stage applied to `model` so far (None if none was)."""
    return _PLANS.get(model)
