"""Structured pruning: remove whole channels with every coupled slice, leaving a smaller dense model.

    report = prunekit.prune(model, {"stages": [{"method": "structured", "target": {"macs_ratio": 0.5}}]}, x)
    plan = get_plan(model)                      # PruningPlan: plain JSON, replays on a fresh base model
    apply_plan(fresh_copy, PruningPlan.from_json(plan.to_json()))
"""

from prunekit.methods.structured.config import StructuredConfig, StructuredTarget
from prunekit.methods.structured.plan import PlanGroup, PlanSlice, PlanStep, PruningPlan, apply_plan, get_plan

__all__ = [
    "PlanGroup",
    "PlanSlice",
    "PlanStep",
    "PruningPlan",
    "StructuredConfig",
    "StructuredTarget",
    "apply_plan",
    "get_plan",
]
