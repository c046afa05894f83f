"""Entry points of mask pruning: `prune` runs a recipe on a model, `measure` adds measured before/after metrics.

    report = prunekit.prune(model, "recipe.yaml", example_inputs=x)   # masks attached, model pruned in place
    prunekit.finalize(model)                                          # zeros baked in, hooks gone
    prunekit.measure(report, dense, model, x, evaluate=accuracy)      # latency, memory, file size, task metric
    report.print(); report.save("out/")
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

import prunekit.methods  # noqa: F401  (registers the built-in methods)
from prunekit.config import Config
from prunekit.errors import PrunekitError
from prunekit.eval import PruneReport, build_report, compare_models, count_model
from prunekit.layers import execution_order, weight_as_matrix
from prunekit.methods.base import PruneContext
from prunekit.patterns import NM, parse_pattern
from prunekit.recipes import Recipe, Stage, load_recipe, parse_recipe
from prunekit.registry import METHODS

RecipeLike = Recipe | str | Path | Mapping[str, Any] | Stage
# Metric names where lower is better; every other task metric (accuracy, f1, ...) is higher-is-better.
_LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "nll")


def list_methods() -> list[str]:
    """Names of the registered pruning methods."""
    return METHODS.names()


def as_recipe(recipe: RecipeLike) -> Recipe:
    """Accept a Recipe, a YAML path, a recipe mapping ({"stages": [...]}) or a single Stage."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Stage):
        return Recipe((recipe,))
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe)
    if isinstance(recipe, Mapping):
        return parse_recipe(dict(recipe))
    raise PrunekitError(f"recipe must be a Recipe, a YAML path or a mapping, got {type(recipe).__name__}")


def stage(method: str, **options: Any) -> Stage:
    """Build one validated stage in Python: `stage("magnitude", sparsity=0.5, scope="global")`."""
    return parse_recipe({"stages": [{"method": method, **options}]}, source="stage").stages[0]


def prune(
    model: nn.Module,
    recipe: RecipeLike,
    example_inputs: Any = None,
    *,
    model_spec: str | None = None,
    progress: bool = False,
    data: Any = None,
) -> PruneReport:
    """Run every stage of `recipe` on `model` in place and return the report (counts, per-layer status).

    Args:
        model: the model to prune; masks are attached as parametrizations (call `finalize` to bake them in).
        recipe: a Recipe, a YAML path, a `{"stages": [...]}` mapping or a `stage(...)`.
        example_inputs: inputs for one forward (Tensor, tuple or dict); used to find the first layer executed
            (protected by default) and to count MACs. Without them, module order stands in and MACs are not counted.
        model_spec: how the model was given, recorded in the report.
        progress: show per-stage progress.
        data: calibration data for data-driven stages (structured `taylor` / `hessian` / `activation` importance,
            `compensate`): a DataLoader or list of batches, each a Tensor of inputs, an `(inputs, targets)` pair or
            a dict of model kwargs (Hugging Face, with optional "labels" for the loss); a single such batch; or a
            DatasetSplits (its train split, batched). Stages take only the first batches they need.
    """
    recipe = as_recipe(recipe)
    base = count_model(model, example_inputs)
    order = execution_order(model, example_inputs) if example_inputs is not None else None
    ctx = PruneContext(example_inputs=example_inputs, execution_order=order, data=data, progress=progress,
                       dense=_dense_copy(model, recipe))
    layer_info: dict[str, dict[str, Any]] = {}
    stages = []
    for st in recipe.stages:
        start = time.perf_counter()
        result = METHODS.get(st.method)().apply(model, st.config, ctx)
        seconds = time.perf_counter() - start
        stages.append({**st.to_dict(), **({"notes": list(result.notes)} if result.notes else {}),
                       **({"sparsity_history": _thin(result.sparsity_history)} if result.sparsity_history else {}),
                       "seconds": round(seconds, 3), "peak_rss_mib": round(_peak_rss_mib(), 1)})
        for name, info in result.layers.items():
            if layer_info.get(name, {}).get("status") == "pruned" and info["status"] != "pruned":
                continue  # an earlier stage pruned it; a later skip does not undo that
            layer_info[name] = {k: v for k, v in info.items() if k in ("status", "reason", "pattern")}
        present = {n for n, _ in model.named_modules()}
        gone = [n for n in layer_info if n not in present]
        if gone:  # a later stage removed (or renumbered) modules an earlier stage reported on, e.g. llm_depth
            for name in gone:
                del layer_info[name]
            stages[-1].setdefault("notes", []).append(
                f"{len(gone)} layer(s) reported by earlier stages no longer exist after this stage (removed or "
                "renumbered); their rows are dropped from the per-layer table")
    nm_note = _nm_check(model, layer_info)
    if nm_note:
        stages[-1].setdefault("notes", []).append(nm_note)
    ctx.dense = None  # the copy is only for the stages' teachers
    # The last stage with a target (a trailing `finetune` has none and keeps the sparsity of the one before).
    target = next((t for st in reversed(recipe.stages) if (t := _target_sparsity(st.config)) is not None), None)
    return build_report(
        model,
        example_inputs,
        layer_info=layer_info,
        base_count=base,
        stages=stages,
        model_spec=model_spec,
        target_sparsity=target,
    )


def _thin(history: list[tuple[int, float]], most: int = 200) -> list[list[float]]:
    """At most `most` (step, sparsity) points of a stage's history, evenly spaced, first and last kept."""
    points = [[int(s), float(v)] for s, v in history]
    if len(points) <= most:
        return points
    stride = (len(points) - 1) / (most - 1)
    return [points[round(i * stride)] for i in range(most)]


def _dense_copy(model: nn.Module, recipe: Recipe) -> nn.Module | None:
    """A frozen copy of the model before the first stage, when a later stage distils from the dense teacher."""
    if not any(getattr(st.config, "distill", None) is not None for st in recipe.stages[1:]):
        return None
    dense = copy.deepcopy(model).eval()
    for p in dense.parameters():
        p.requires_grad_(False)
    return dense


def _peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _nm_check(model: nn.Module, layer_info: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Check every layer a stage pruned with an N:M pattern against that pattern, on its current weight.

    Raises:
        PrunekitError: a pruned weight breaks its pattern (a bug, never silently saved).
    """
    modules = dict(model.named_modules())
    checked, bad = 0, []
    for name, info in layer_info.items():
        text = info.get("pattern")
        if info.get("status") != "pruned" or not text or ":" not in str(text) or name not in modules:
            continue
        pattern = parse_pattern(str(text))
        if not isinstance(pattern, NM):
            continue
        module = modules[name]
        checked += 1
        if not pattern.check(weight_as_matrix(module, module.weight).detach()):
            bad.append(name)
    if bad:
        raise PrunekitError(f"N:M check failed: {len(bad)} pruned weight(s) break their pattern, e.g. {bad[0]!r}")
    return f"N:M check: all {checked} pruned weight(s) follow their pattern" if checked else None


def _target_sparsity(cfg: Config) -> float | None:
    value = getattr(cfg, "target_sparsity", None)
    return float(value) if value is not None else None


def measure(
    report: PruneReport,
    dense: nn.Module,
    pruned: nn.Module,
    example_inputs: Any,
    *,
    evaluate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    latency: bool = True,
    iters: int = 30,
) -> PruneReport:
    """Measure `dense` and `pruned` the same way and add the before/after metrics to `report` (returned).

    Args:
        evaluate: model -> {metric name: value}, e.g. held-out accuracy; run on both models.
        latency: time both models (alternating rounds, same inputs and threads).
        iters: timed runs per latency round.
    """
    if evaluate is not None:
        before, after = dict(evaluate(dense)), dict(evaluate(pruned))
        for name, value in before.items():
            lower = any(tok in name.lower() for tok in _LOWER_IS_BETTER)
            report.add_metric(name, float(value), float(after[name]), higher_is_better=not lower, note="task metric")
    for pair in compare_models(dense, pruned, example_inputs, latency=latency, iters=iters):
        report.add_metric(
            pair.name, pair.before, pair.after, unit=pair.unit, higher_is_better=pair.higher_is_better, note=pair.note
        )
    return report
