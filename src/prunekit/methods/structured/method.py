"""The `structured` method: dependency graph -> groups -> importance -> selection -> plan -> surgery -> verify.

Thin over `prunekit.graph` (tracing, groups, surgery, equivalence check) and the pure maths of `importance.py`
and `select.py`. The plan of every structured stage is kept per model: `get_plan(model)` (see plan.py).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from prunekit.config.targets import match_name
from prunekit.errors import PrunekitError, suggest
from prunekit.graph import DependencyGraph, Group, VerifyResult, get_tensor, remove_slices
from prunekit.layers import is_prunable
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.structured.calib import Batch, require_batches, run_outputs
from prunekit.methods.structured.compensate import Refit, compensate, plan_refits
from prunekit.methods.structured.config import StructuredConfig
from prunekit.methods.structured.evidence import build_evidence
from prunekit.methods.structured.hf_config import (
    apply_config_edit,
    find_config_edit,
    is_hf_model,
    shapes_after,
    state_shapes,
)
from prunekit.methods.structured.importance import all_scores
from prunekit.methods.structured.importance_data import DATA_KINDS, Evidence
from prunekit.methods.structured.plan import PlanGroup, PlanSlice, PlanStep, get_plan, record_step
from prunekit.methods.structured.schedule import Schedule
from prunekit.methods.structured.select import candidate
from prunekit.methods.structured.target_cost import select_target

_MAX_REPAIRS = 3
_MAX_HF_STEP = 16  # largest removal step probed per class of groups for a Hugging Face config
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm, nn.modules.instancenorm._InstanceNorm)


@register_method
class StructuredMethod(Method):
    """Remove whole channels (filters, neurons) with every coupled slice; a smaller dense model, plan replayable."""

    name = "structured"
    config_cls = StructuredConfig

    def apply(self, model: nn.Module, config: StructuredConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        _check_no_masks(model)
        ignored = _ignored_modules(model, config.ignore)
        batches = _calibration(config, ctx)
        before = _sizes(model)
        goal = Schedule(config.target.kind, config.target.ratio, config.steps)
        notes: list[str] = []
        for i in range(config.steps):
            with _no_kv_cache(model):
                graph, step_notes = self._step(model, config, ctx, ignored, batches, goal, i)
            notes.extend(step_notes if config.steps == 1 else [f"step {i + 1}/{config.steps}: {n}" for n in step_notes])
        result = StageResult(method=self.name, layers=_layer_info(model, graph.groups, before, ignored))
        result.notes.extend(notes)
        result.notes.append(f"importance: {config.importance}; steps: {config.steps}; compensate: {config.compensate}"
                            + (f"; calibration: {len(batches)} batch(es)" if batches else ""))
        if config.steps > 1:
            result.notes.append(f"target {config.target.kind} {config.target.ratio:g}: reached {goal.overall:.4f} "
                                f"of the original after {config.steps} steps (geometric schedule)")
        return result

    def _step(self, model: nn.Module, config: StructuredConfig, ctx: PruneContext, ignored: dict[str, str],
              batches: list[Batch], goal: Schedule, index: int) -> tuple[DependencyGraph, list[str]]:
        """One pruning step: build the graph, score, select, cut, verify, record the plan step, compensate."""
        graph = DependencyGraph.build(model, ctx.example_inputs, strict=config.strict)
        by_id = {id(get_tensor(model, name)): name for name in graph.attached_tensors}  # tied: graph's own name
        for module_name, pattern in ignored.items():
            own = [by_id[id(t)] for _, t in _own_tensors(model.get_submodule(module_name)) if id(t) in by_id]
            graph.freeze_tensors(own, f"ignored by {pattern!r}")
        hf = is_hf_model(model)
        if config.hf_config and not hf:
            raise PrunekitError(f"hf_config: true needs a transformers PreTrainedModel, got {type(model).__name__}")
        uniform = hf if config.uniform_layers is None else config.uniform_layers
        edit_config = hf if config.hf_config is None else config.hf_config
        hf_frozen, steps, fields = _hf_steps(model, graph) if edit_config else ([], {}, set())
        if hf_frozen and not any(g.prunable for g in graph.groups):
            raise PrunekitError(
                f"structured: the Hugging Face config of {type(model).__name__} can express none of the prunable "
                "sizes; set hf_config: false to prune per layer (in memory only, from_pretrained will not load it)"
            )
        cfg = goal.step_config(config, graph, index)
        evidence = build_evidence(model, graph, config.importance, batches) if _needs_evidence(config) else None
        reference = run_outputs(model, batches) if config.compensate != "none" else None
        prepare = None
        if config.compensate == "least_squares":
            def prepare(step: PlanStep) -> list[Refit]:
                return plan_refits(model, step.removals(), batches, config.damp)
        run = _prune_verified(model, graph, cfg, uniform, steps, evidence, prepare)
        goal.advance(run.reached)
        hf_notes = _edit_hf_config(model, hf_frozen, fields, graph.fixed_sizes, run.step) if edit_config else []
        plan = record_step(model, run.step)
        notes = _notes(graph, cfg, run.reached, run.step, run.verdict, plan is get_plan(model))
        notes.extend(run.target_notes)
        notes.append("mode: uniform layers (repeated groups keep one count, ranked within each block)"
                     if uniform else "mode: per-layer counts")
        notes.extend(hf_notes)
        if run.kept_whole:
            notes.append(f"repair: {len(run.kept_whole)} group(s) kept whole after a failed check: "
                         + ", ".join(run.kept_whole[:5]) + (" ..." if len(run.kept_whole) > 5 else ""))
        if reference is not None:
            notes.append(compensate(model, config.compensate, batches, reference, run.pending))
        return graph, notes


def _needs_evidence(config: StructuredConfig) -> bool:
    return config.importance in (*DATA_KINDS, "fpgm")


def _calibration(config: StructuredConfig, ctx: PruneContext) -> list[Batch]:
    """The calibration batches when the importance or the compensation needs them (else none are read)."""
    uses = [f"importance {config.importance}"] if config.importance in DATA_KINDS else []
    uses += [f"compensate {config.compensate}"] if config.compensate != "none" else []
    if not uses:
        return []
    return require_batches(ctx.data, config.calib_batches, config.batch_size, " and ".join(uses))


@dataclass
class _Run:
    step: PlanStep
    reached: float
    before: dict[str, dict[str, Any]]
    verdict: VerifyResult | None
    kept_whole: list[str] = field(default_factory=list)
    pending: Any = None  # what `prepare` computed on the dense model (least-squares refits)
    target_notes: list[str] = field(default_factory=list)  # e.g. how the latency model was built


def _layer_classes(groups: list[Group]) -> list[int]:
    """Class id per group: groups whose members are the same tensors up to the block index (and of equal size)."""
    keys: dict[tuple, int] = {}
    out = []
    for g in groups:
        key = (g.size, tuple(sorted((re.sub(r"\.\d+\.", ".#.", m.param), m.dim) for m in g.members)))
        out.append(keys.setdefault(key, len(keys)))
    return out


def _hf_steps(model: nn.Module, graph: DependencyGraph) -> tuple[list[str], dict[int, int], set[str]]:
    """Per class of groups, the smallest removal step (a divisor of the size, at most 16) that some edit of the HF
    config expresses; classes without one are kept whole.

    Returns:
        (names of the kept groups, group id -> step, the config fields the working edits use)."""
    groups = graph.groups
    classes = _layer_classes(groups)
    bad: list[int] = []
    steps: dict[int, int] = {}
    fields: set[str] = set()
    for cls in sorted(set(classes)):
        members = [g for g, c in zip(groups, classes) if c == cls and g.prunable]
        if not members:
            continue
        n = min(len(g.prunable) for g in members)  # probe removals leave at least one unit: no empty tensors
        step = next((s for s in range(1, min(_MAX_HF_STEP, n - (n == members[0].size)) + 1)
                     if members[0].size % s == 0 and _expressible(model, members, s, fields, graph.fixed_sizes)), None)
        if step is None:
            bad.extend(g.id for g in members)
        steps.update({g.id: step or 1 for g in members})
    names = [groups[i].name for i in bad]
    if bad:
        graph.freeze_groups(bad, "kept whole: the Hugging Face config cannot express its size (hf_config)")
    return names, steps, fields


def _expressible(model: nn.Module, members: list[Group], count: int, fields: set[str], fixed: frozenset[int]) -> bool:
    removals: dict[str, dict[int, list[int]]] = {}
    for g in members:
        for name, dim, idx in g.slices(g.prunable[:count]):
            removals.setdefault(name, {}).setdefault(dim, []).extend(idx)
    edit = find_config_edit(model, shapes_after(model, removals), fixed=fixed)
    fields.update(edit or {})
    return edit is not None


def _edit_hf_config(model: nn.Module, frozen: list[str], fields: set[str], fixed: frozenset[int],
                    step: PlanStep) -> list[str]:
    """Edit model.config to the pruned sizes when it can express them (recorded in the plan step); the notes."""
    notes = []
    if frozen:
        notes.append(f"hf_config: {len(frozen)} group(s) kept whole because the config cannot express their size: "
                     + ", ".join(frozen[:4]) + (" ..." if len(frozen) > 4 else ""))
    shapes = state_shapes(model)
    edit = find_config_edit(model, shapes, fields, fixed) if fields else None
    if edit is None:
        edit = find_config_edit(model, shapes, fixed=fixed)
    if edit is None:
        notes.append("hf_config: the pruned sizes are not expressible by the Hugging Face config; config NOT "
                     "edited, so from_pretrained cannot rebuild this model (replay the plan on the base model)")
    else:
        changes = apply_config_edit(model, edit)
        step.config = dict(edit)
        notes.append("hf_config: " + (", ".join(changes) if changes else "unchanged")
                     + "; from_pretrained rebuilds these shapes (checked on the meta device)")
    return notes


def _prune_verified(model: nn.Module, graph: DependencyGraph, config: StructuredConfig, uniform: bool,
                    steps: dict[int, int], evidence: Evidence | None = None,
                    prepare: Callable[[PlanStep], Any] | None = None) -> _Run:
    """Score, select, cut and check; on a failed check keep the breaking groups whole and try again.

    `prepare(step)` runs on the unpruned model right before the surgery (e.g. to capture what compensation needs);
    its result is returned in `_Run.pending`."""
    norm_weights = frozenset(f"{n}.weight" if n else "weight" for n, m in model.named_modules() if isinstance(m, _NORMS))
    kept_whole: list[str] = []
    target_notes: list[str] = []
    attempt = 0
    while True:
        target_notes.clear()
        groups = graph.groups
        scores = all_scores(groups, lambda name: get_tensor(model, name), config.importance,
                            norm_weights=norm_weights, seed=config.seed, evidence=evidence)
        chosen = [g for g in groups if g.id in scores]
        cands = [candidate(scores[g.id], _frozen_mask(g), steps.get(g.id, 1)) for g in chosen]
        classes = _layer_classes(chosen) if uniform else None
        masks, reached = select_target(model, graph, chosen, cands, config, classes, target_notes)
        if config.strict and abs(reached - config.target.ratio) > 0.02:
            raise PrunekitError(
                f"strict: target {config.target.kind} {config.target.ratio:g} can only reach {reached:.3f} "
                "(frozen channels, min_channels or round_to limit it)"
            )
        keep = {g.id: m for g, m in zip(chosen, masks)}
        step = _plan_step(model, chosen, keep)
        before = _sizes(model)
        pending = prepare(step) if prepare is not None else None
        undo = remove_slices(model, step.removals())
        verdict = graph.verify(model, keep) if config.verify else None
        if verdict is None or verdict.ok:
            return _Run(step, reached, before, verdict, kept_whole, pending, list(target_notes))
        undo.restore()
        if not config.repair or attempt == _MAX_REPAIRS:
            raise PrunekitError(
                f"structured: equivalence check failed ({verdict.detail}); the model was left unchanged. Some code "
                "in the model does not follow the pruned shapes: ignore the module involved"
                + ("" if config.repair else ", or set repair: true")
            )
        bad = graph.breaking_groups(model, keep)
        if not bad:
            raise PrunekitError(f"structured: equivalence check failed ({verdict.detail}) and no group could be "
                                "isolated; the model was left unchanged")
        kept_whole.extend(groups[i].name for i in bad)
        graph.freeze_groups(bad, "kept whole: removing its channels changed the model's output (the model's code "
                                 "uses sizes the dependency graph cannot see)")
        attempt += 1


INCONCLUSIVE = ("verify: INCONCLUSIVE - every output is exactly 0 on the example inputs (e.g. a zero-initialized "
                "head), so the equivalence check proved nothing; give inputs or weights with a non-zero output")


@contextmanager
def _no_kv_cache(model: nn.Module) -> Iterator[None]:
    """Hugging Face decoders return a KV cache object by default, which torch.export cannot output: trace and
    check with `config.use_cache = False`, restored afterwards."""
    config = getattr(model, "config", None)
    previous = getattr(config, "use_cache", None)
    if previous:
        config.use_cache = False
    try:
        yield
    finally:
        if previous:
            config.use_cache = previous


def _check_no_masks(model: nn.Module) -> None:
    masked = [n for n, m in model.named_modules() if parametrize.is_parametrized(m)]
    if masked:
        raise PrunekitError(
            f"structured pruning needs plain weights, but {masked[0]!r} has a mask attached; "
            "call prunekit.finalize(model) first"
        )


def _own_tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    return [(n, t) for n, t in list(module._parameters.items()) + list(module._buffers.items()) if t is not None]


def _ignored_modules(model: nn.Module, patterns: tuple[str, ...]) -> dict[str, str]:
    names = [n for n, _ in model.named_modules() if n]
    out: dict[str, str] = {}
    for pattern in patterns:
        hits = [n for n in names if match_name(pattern, n)]
        if not hits:
            raise PrunekitError(f"ignore entry {pattern!r} matches no module.{suggest(pattern, names)}")
        for name in hits:  # an ignored container ignores everything inside it
            for sub, _ in model.get_submodule(name).named_modules():
                out.setdefault(f"{name}.{sub}" if sub else name, pattern)
    return out


def _frozen_mask(group: Group) -> Tensor:
    mask = torch.zeros(group.size, dtype=torch.bool)
    for u in group.frozen:
        mask[u] = True
    return mask


def _plan_step(model: nn.Module, chosen: list[Group], keep: dict[int, Tensor]) -> PlanStep:
    step = PlanStep()
    for g in chosen:
        mask = keep[g.id]
        gone = [u for u in range(g.size) if not bool(mask[u])]
        if not gone:
            continue
        slices = tuple(PlanSlice(t, d, tuple(ix)) for t, d, ix in g.slices(gone))
        step.groups.append(PlanGroup(g.name, g.size, g.size - len(gone), slices))
    for name in step.removals():
        step.shapes[name] = list(get_tensor(model, name).shape)
    return step


_SIZE_ATTRS = ("out_channels", "in_channels", "groups", "out_features", "in_features", "num_features",
               "normalized_shape", "num_channels", "num_groups", "embedding_dim", "nf")


def _sizes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Size attributes (or the first tensor's shape) of every module that owns tensors."""
    out = {}
    for name, module in model.named_modules():
        own = _own_tensors(module)
        if not own:
            continue
        attrs = {a: getattr(module, a) for a in _SIZE_ATTRS if isinstance(getattr(module, a, None), (int, tuple))}
        out[name] = attrs or {own[0][0]: tuple(own[0][1].shape)}
    return out


def _describe(old: dict[str, Any], new: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return str(v[0]) if isinstance(v, tuple) and len(v) == 1 else str(v)

    return "; ".join(f"{k.replace('_', ' ')} {fmt(old[k])} -> {fmt(new.get(k))}" for k in old if old[k] != new.get(k))


def _layer_info(model: nn.Module, groups: list[Group], before: dict[str, dict[str, Any]],
                ignored: dict[str, str]) -> dict[str, dict[str, Any]]:
    after = _sizes(model)
    frozen_why: dict[str, str] = {}
    prunable: set[str] = set()
    for g in groups:
        for m in g.members:
            module = m.param.rpartition(".")[0]
            if any(u not in g.frozen for u in m.units):
                prunable.add(module)
            elif m.units:
                frozen_why.setdefault(module, g.frozen[m.units[0]])
    info: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if name not in before:
            continue
        if before[name] != after.get(name):
            info[name] = {"status": "pruned", "reason": _describe(before[name], after.get(name, {}))}
        elif name in ignored:
            info[name] = {"status": "skipped", "reason": f"ignored by {ignored[name]!r}"}
        elif is_prunable(module) and name not in prunable:
            why = frozen_why.get(name, "not reached by the traced forward")
            info[name] = {"status": "skipped", "reason": f"channels frozen: {why}"}
    return info


def _notes(graph: DependencyGraph, config: StructuredConfig, reached: float, step: PlanStep,
           verdict: Any, recorded: bool) -> list[str]:
    removed = sum(g.channels_before - g.channels_after for g in step.groups)
    notes = [
        f"structured: {graph.summary()}",
        f"target {config.target.kind} {config.target.ratio:g}: reached {reached:.4f} (analytic, scope {config.scope})",
        f"removed {removed} channels in {len(step.groups)} groups; plan: prunekit.methods.structured.get_plan(model)"
        + ("" if recorded else " (not recorded)"),
    ]
    if graph.unsupported:
        ops = ", ".join(sorted({f"{u.op} at {u.module or '<model>'}" for u in graph.unsupported})[:3])
        notes.append(f"{len(graph.unsupported)} op(s) without a channel rule froze their channels: {ops}")
    if verdict is not None:
        notes.append(f"verify: ok, max |pruned - reference| {verdict.max_abs_error:.2g} (output scale {verdict.scale:.2g})")
        if verdict.scale == 0.0:
            notes.append(INCONCLUSIVE)
            warnings.warn(INCONCLUSIVE, stacklevel=3)
    return notes
