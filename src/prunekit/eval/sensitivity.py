"""Sensitivity analysis: prune each layer alone at a grid of sparsities and measure the task metric.

For every analysed layer and every grid sparsity s, the layer's weights are pruned by magnitude (unstructured, the
floor(s * n + 0.5) smallest |w|), the metric is measured on the VALIDATION split (never test: the curves drive
decisions), and the weights are restored exactly. The curves (`SensitivityCurves`, format "prunekit-sensitivity")
feed the sensitivity allocation (`prunekit.training.allocation`, kind "sensitivity"), which equalises the predicted
metric drop across layers. `prunekit analyze` wraps this module.

Cost: (layers x grid points) evaluations of the validation split, plus one dense evaluation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit._atomic import atomic_write_text
from prunekit.errors import PrunekitError
from prunekit.layers import is_prunable
from prunekit.patterns import n_to_prune
from prunekit.training.allocation import AllocationConfig, SensitivityCurves, layer_sparsities

__all__ = ["DEFAULT_SPARSITIES", "SensitivityResult", "analyze_sensitivity", "check_grid", "compare_allocations"]

DEFAULT_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


def check_grid(sparsities: Sequence[float]) -> list[float]:
    """Validate a grid of sparsities: non-empty, each in (0, 1); returned sorted without duplicates."""
    values = [float(s) for s in sparsities]
    if not values:
        raise PrunekitError("sensitivity needs at least one sparsity (e.g. 0.5 0.8 0.9)")
    bad = [s for s in values if not 0.0 < s < 1.0]
    if bad:
        raise PrunekitError(f"sensitivity sparsity {bad[0]:g} must be in (0, 1)")
    return sorted(set(values))


@dataclass
class SensitivityResult:
    """The curves of one analysis, where they came from, and what they cost."""

    curves: SensitivityCurves
    model: str | None = None
    data: str | None = None
    split: str = "validation"
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = self.curves.to_dict()
        out.update(model=self.model, data=self.data, split=self.split, seconds=self.seconds, **self.extra)
        return out

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON (format "prunekit-sensitivity") atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> SensitivityResult:
        """Read a sensitivity.json; a missing or corrupt file -> PrunekitError naming it."""
        from prunekit.training.allocation import load_curves

        curves = load_curves(path)
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != "prunekit-sensitivity":
            data = data.get("sensitivity", {})
        return cls(curves=curves, model=data.get("model"), data=data.get("data"),
                   split=str(data.get("split", "validation")), seconds=float(data.get("seconds", 0.0)))

    def table(self) -> str:
        """Markdown: one row per layer (weights, metric at each grid sparsity), the dense metric in the title."""
        c = self.curves
        head = "| layer | weights | " + " | ".join(f"{100 * s:g}%" for s in c.sparsities) + " |"
        lines = [f"{c.metric} on the {self.split} split, one layer pruned alone by magnitude (dense: "
                 f"{_fmt(c.dense, c.metric)})", "", head, "|---|---:|" + "---:|" * len(c.sparsities)]
        for name, values in c.layers.items():
            cells = " | ".join(_fmt(v, c.metric) for v in values)
            lines.append(f"| {name} | {c.params[name]:,} | {cells} |")
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> None:
        """PNG: one line per layer (metric vs sparsity), the dense metric dashed."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        c = self.curves
        fig = Figure(figsize=(8.0, 5.0), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        xs = [0.0, *c.sparsities]
        palette = _palette(len(c.layers))
        for i, (name, values) in enumerate(c.layers.items()):
            ax.plot([100 * x for x in xs], [c.dense, *values], marker="os^vD"[i // 10 % 5], markersize=3,
                    linewidth=1.2, color=palette[i], linestyle="-" if i < 10 else "--",
                    label=name if len(name) <= 32 else "…" + name[-31:])
        ax.axhline(c.dense, color="black", linestyle="--", linewidth=0.8, label="dense")
        ax.set_xlabel("sparsity of the one pruned layer (%)")
        ax.set_ylabel(f"{c.metric} ({self.split})")
        ax.set_title(title or "Sensitivity: each layer pruned alone (magnitude)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(c.layers) > 8 else 1, loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png")


def _palette(n: int) -> list[Any]:
    """n distinguishable colours: tab10, then tab20's lighter shades, then cycling (styles differ per 10)."""
    from matplotlib import colormaps

    tab10, tab20 = colormaps["tab10"], colormaps["tab20"]
    base = [tab10(i) for i in range(10)] + [tab20(2 * i + 1) for i in range(10)]
    return [base[i % len(base)] for i in range(n)]


def _fmt(value: float, metric: str) -> str:
    return f"{100 * value:.1f}%" if metric == "accuracy" else f"{value:.3f}"


def default_layers(model: nn.Module) -> list[str]:
    """Every prunable layer (Linear / Conv / HF Conv1D) with a weight, in registration order."""
    return [n for n, m in model.named_modules() if n and is_prunable(m) and getattr(m, "weight", None) is not None]


@torch.no_grad()
def _prune_alone(module: nn.Module, sparsity: float) -> None:
    w = module.weight
    k = n_to_prune(w.numel(), sparsity)
    if k == 0:
        return
    order = torch.argsort(w.detach().abs().flatten(), stable=True)
    keep = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
    keep[order[:k]] = False
    w.mul_(keep.view(w.shape))


def analyze_sensitivity(model: nn.Module, evaluate: Callable[[nn.Module], float], *,
                        layers: Sequence[str] | None = None, sparsities: Sequence[float] = DEFAULT_SPARSITIES,
                        metric: str = "accuracy", higher_is_better: bool = True,
                        progress: bool = True) -> SensitivityResult:
    """Measure `evaluate(model)` with each layer pruned alone at each sparsity; the model is left unchanged.

    Args:
        model: the dense model (weights are modified temporarily and restored bit-exactly).
        evaluate: model -> the task metric on the validation split.
        layers: module names to analyse (default: every prunable layer).
        sparsities: the grid, each in (0, 1).
        metric, higher_is_better: name and direction of what `evaluate` returns.
        progress: a tqdm bar over the evaluations.

    Raises:
        PrunekitError: an unknown layer, a bad grid, or a layer that carries a mask (finalize it first).
    """
    import time

    from tqdm.auto import tqdm

    grid = check_grid(sparsities)
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else default_layers(model)
    if not names:
        raise PrunekitError("sensitivity: the model has no prunable (Linear / Conv) layer")
    for name in names:
        module = modules.get(name)
        if module is None or getattr(module, "weight", None) is None:
            from prunekit.errors import choices_text, suggest

            known = default_layers(model)
            raise PrunekitError(f"sensitivity: no layer {name!r} with a weight.{suggest(name, known)} Prunable "
                                f"layers: {choices_text(known)}")
        if hasattr(module, "parametrizations"):
            raise PrunekitError(f"sensitivity: layer {name!r} carries a mask; analyse a dense (or finalized) model")
    start = time.perf_counter()
    dense = float(evaluate(model))
    curves = SensitivityCurves(sparsities=grid, dense=dense, metric=metric, higher_is_better=higher_is_better)
    bar = tqdm(total=len(names) * len(grid), desc="sensitivity", disable=not progress, leave=False)
    try:
        for name in names:
            module = modules[name]
            saved = module.weight.detach().clone()
            values = []
            try:
                for s in grid:
                    _prune_alone(module, s)
                    values.append(float(evaluate(model)))
                    with torch.no_grad():
                        module.weight.copy_(saved)
                    bar.update(1)
            finally:
                with torch.no_grad():
                    module.weight.copy_(saved)
            curves.layers[name] = values
            curves.params[name] = int(saved.numel())
    finally:
        bar.close()
    return SensitivityResult(curves=curves, seconds=time.perf_counter() - start)


def compare_allocations(model: nn.Module, layers: list[str], target: float, curves_file: str | os.PathLike[str],
                        *, max_sparsity: float = 1.0) -> dict[str, dict[str, float]]:
    """Per-layer sparsities of every allocation kind at `target` over `layers`, side by side."""
    out = {}
    for kind in ("uniform", "erk", "lamp", "sensitivity"):
        alloc = AllocationConfig(kind=kind, file=str(curves_file) if kind == "sensitivity" else None)
        out[kind] = layer_sparsities(model, layers, target, alloc, max_sparsity=max_sparsity)
    return out


def allocation_table(alloc: dict[str, dict[str, float]], params: dict[str, int]) -> str:
    """Markdown: one row per layer, one column per allocation kind (sparsity in %), and the weighted mean."""
    kinds = list(alloc)
    layers = list(next(iter(alloc.values())))
    lines = ["| layer | weights | " + " | ".join(kinds) + " |", "|---|---:|" + "---:|" * len(kinds)]
    for name in layers:
        lines.append(f"| {name} | {params[name]:,} | " + " | ".join(f"{100 * alloc[k][name]:.1f}%" for k in kinds)
                     + " |")
    total = sum(params[n] for n in layers)
    means = [sum(params[n] * alloc[k][n] for n in layers) / total for k in kinds]
    lines.append(f"| **weighted mean** | {total:,} | " + " | ".join(f"{100 * m:.1f}%" for m in means) + " |")
    return "\n".join(lines) + "\n"
