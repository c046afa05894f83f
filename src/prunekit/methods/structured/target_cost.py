"""The cost a structured target measures, as a function of the groups' keep masks, and the selection against it.

- `width_ratio`: kept prunable channels / prunable channels (counted directly).
- `params_ratio`, `macs_ratio`: the graph's analytic cost model (exact parameter count; MACs of one forward on
  the example inputs).
- `latency_ratio`: the latency model of `prunekit.graph.latency` (per-op latency tables measured once on this
  device and cached; the rest of the forward fitted from two whole-model timings). The ratio reached is the
  PREDICTED one: `prunekit.measure` gives the real speed-up.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph, Group
from prunekit.graph.latency import latency_model
from prunekit.methods.structured.config import StructuredConfig
from prunekit.methods.structured.select import Candidate, select

Cost = Callable[[list[Tensor]], float]


def target_cost(model: nn.Module, graph: DependencyGraph, chosen: list[Group], cands: list[Candidate], kind: str,
                notes: list[str]) -> Cost:
    """The function masks -> fraction of the target quantity that remains; appends how it was measured to `notes`."""
    if kind == "width_ratio":
        total = sum(int((~c.frozen).sum()) for c in cands)

        def width(masks: list[Tensor]) -> float:
            return sum(int((m & ~c.frozen).sum()) for m, c in zip(masks, cands)) / max(total, 1)

        return width

    def keep(masks: list[Tensor]) -> Tensor:
        return graph.keep_vector({g.id: m for g, m in zip(chosen, masks)})

    if kind == "latency_ratio":
        lat = latency_model(graph, model)
        if lat.dense_latency <= 0:
            raise PrunekitError("structured: the latency model predicts no latency to reduce")
        notes.append(f"latency model: dense {lat.dense_latency * 1e3:.3g} ms predicted on this device "
                     f"({lat.measured} timing(s) this run, the rest cached); the ratio reached is predicted, "
                     "measure the pruned model for the real speed-up")
        notes.extend(lat.notes)
        return lambda masks: lat.latency(keep(masks)) / lat.dense_latency
    model_cost = graph.cost_model()
    fn = model_cost.params if kind == "params_ratio" else model_cost.macs
    dense = model_cost.dense_params if kind == "params_ratio" else model_cost.dense_macs
    if dense <= 0:
        raise PrunekitError(f"structured: the model has no {kind.removesuffix('_ratio')} to reduce")
    return lambda masks: fn(keep(masks)) / dense


def select_target(model: nn.Module, graph: DependencyGraph, chosen: list[Group], cands: list[Candidate],
                  config: StructuredConfig, classes: list[int] | None, notes: list[str]) -> tuple[list[Tensor], float]:
    """Keep masks (one per chosen group) closest to the config's target, and the ratio they reach."""
    if not cands:
        raise PrunekitError(f"structured: no channel can be removed ({graph.summary()})")
    kind = config.target.kind
    cost = target_cost(model, graph, chosen, cands, kind, notes)
    return select(cands, cost, config.target.ratio, scope=config.scope, round_to=config.round_to,
                  min_channels=config.min_channels, width_direct=(kind == "width_ratio"), classes=classes)
