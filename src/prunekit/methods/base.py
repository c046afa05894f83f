"""The method protocol: a registered class with a config type and `apply(model, config, ctx) -> StageResult`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from prunekit.config import Config
from prunekit.registry import METHODS


@dataclass
class PruneContext:
    """What a stage may use besides its config: example inputs for tracing, data, and UI settings.

    `dense` is a frozen copy of the model as it was before the first stage of the run: `prunekit.prune` keeps one
    only when a later stage distils (has a `distill` setting), so a `finetune` after a pruning stage can learn from
    the dense teacher; otherwise None (a distilling stage then uses the model as it enters that stage).
    """

    example_inputs: Any = None
    execution_order: list[str] | None = None
    data: Any = None
    progress: bool = False
    dense: nn.Module | None = None


@dataclass
class StageResult:
    """What one stage did: per-layer status ("pruned" / "skipped"), reason, pattern and achieved sparsity."""

    method: str
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Gradual stages: (optimizer step, sparsity) at every mask update; plotted as schedule.png by the report.
    sparsity_history: list[tuple[int, float]] = field(default_factory=list)


class Method(ABC):
    """A pruning algorithm. Subclasses set `name` and `config_cls` and implement `apply`."""

    name: ClassVar[str]
    config_cls: ClassVar[type[Config]]

    @abstractmethod
    def apply(self, model: nn.Module, config: Config, ctx: PruneContext) -> StageResult:
        """Prune `model` in place as `config` says and report what was done."""


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a Method subclass under its `name`."""
    doc = (cls.__doc__ or "").strip().splitlines()
    METHODS.register(cls.name, cls, help=doc[0] if doc else "")
    return cls
