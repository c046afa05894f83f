"""The `steps` schedule of the structured method: step i of n reaches ratio**(i/n) of the original model.

Each step rebuilds the dependency graph on the model as the previous step left it, so a step's target is given
relative to the current model: width goal / width kept so far, or (params, MACs) goal * original cost / current
cost. One step is the plain one-shot run (the config is used as is).
"""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.graph import DependencyGraph
from prunekit.methods.structured.config import StructuredConfig, StructuredTarget


@dataclass
class Schedule:
    """The target schedule: step i of n reaches ratio**((i+1)/n) of the ORIGINAL model's width / params / MACs."""

    kind: str
    ratio: float
    steps: int
    orig: float | None = None
    current: float | None = None
    overall: float = 1.0

    def step_config(self, config: StructuredConfig, graph: DependencyGraph, index: int) -> StructuredConfig:
        """The config of step `index`, its target relative to the model as it is now (config itself for 1 step)."""
        if self.steps == 1:
            return config
        return self.goal_config(config, graph, self.ratio ** ((index + 1) / self.steps))

    def goal_config(self, config: StructuredConfig, graph: DependencyGraph, goal: float) -> StructuredConfig:
        """The config whose target takes the model as it is now to `goal`, a ratio of the ORIGINAL model."""
        if self.kind in ("width_ratio", "latency_ratio"):  # reached ratios multiply step over step
            rel = goal / self.overall
        else:
            cost = graph.cost_model()
            dense = cost.dense_params if self.kind == "params_ratio" else cost.dense_macs
            self.orig = dense if self.orig is None else self.orig
            self.current = dense
            rel = goal * self.orig / dense if dense > 0 else 1.0
        rel = min(max(rel, 1e-9), 1.0)
        return config.model_copy(update={"target": StructuredTarget(**{self.kind: rel})})

    def advance(self, reached: float) -> None:
        """Record a step's reached ratio (relative to the model before the step)."""
        if self.steps == 1 or self.kind in ("width_ratio", "latency_ratio"):
            self.overall *= reached
        else:
            self.overall = reached * (self.current or 1.0) / (self.orig or 1.0)
