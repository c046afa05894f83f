"""The `iterative` method: prune a step, fine-tune, check the validation accuracy, repeat `steps` times.

structured: each step is one removal of a `StructuredPruner` (graph, selection, surgery, verify, plan step; BN
statistics re-estimated on train batches right after it), so `get_plan(model)` replays the final shapes.
mask: each step runs the `magnitude` method at the step's sparsity (already-pruned weights score lowest, so masks
only shrink); masks stay attached, as with `gmp`.
Fine-tuning: a fresh AdamW with cosine decay per step, on deterministic batches of the train split (the shared loop
of `prunekit.training.finetune_loop`), optionally distilled from the dense model. Decisions read the validation split only; the test split is never read.
With a checkpoint folder, each accepted step is checkpointed and a resumed run skips the finished steps
(`methods.iterative.resume`).
With `max_accuracy_drop`, a step whose val accuracy after its fine-tune falls more than that below the dense val
accuracy is undone (the model returns, in place, to a copy taken before the step) and pruning stops.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.config.targets import select_targets
from prunekit.data.loops import evaluate_classifier
from prunekit.errors import PrunekitError
from prunekit.importance import magnitude
from prunekit.masks import current_mask, masked_modules
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.iterative.config import IterativeConfig
from prunekit.methods.iterative.resume import resume, save_step
from prunekit.methods.magnitude.config import MagnitudeConfig
from prunekit.methods.magnitude.method import MagnitudeMethod
from prunekit.methods.mask_pipeline import _drop_unsupported, protected_layers, run_mask_pruning
from prunekit.methods.structured.plan import get_plan
from prunekit.patterns import parse_pattern
from prunekit.training.allocation import layer_sparsities
from prunekit.training.finetune_loop import (
    Batches,
    find_checkpoint,
    make_distiller,
    make_optimizer,
    model_device,
    require_splits,
    teacher_source,
    train_steps,
)
from prunekit.training.structured_pruner import StructuredPruner, StructuredPrunerConfig


def restore_in_place(model: nn.Module, snapshot: nn.Module) -> None:
    """Make `model` (the same object the caller holds) a copy of `snapshot`: submodules, tensors and attributes."""
    fresh = copy.deepcopy(snapshot)
    model.__class__ = fresh.__class__  # a parametrized top-level module has its own class
    model.__dict__.clear()
    model.__dict__.update(fresh.__dict__)


def mask_sparsity(model: nn.Module) -> float:
    """Fraction of zeros in the keep_masks of every masked tensor (0.0 when none is masked)."""
    total = kept = 0
    for _name, module, tname in masked_modules(model):
        keep: Tensor = current_mask(module, tname)  # type: ignore[assignment]
        total += keep.numel()
        kept += int(keep.sum())
    return 1.0 - kept / total if total else 0.0


class _Stepper:
    """One prune step of either kind, and what it reached."""

    def __init__(self, model: nn.Module, config: IterativeConfig, ctx: PruneContext) -> None:
        self.model, self.config, self.ctx = model, config, ctx
        self.kind = config.kind
        self.layers: dict[str, dict[str, Any]] = {}
        self.pruner: StructuredPruner | None = None
        if self.kind == "structured":
            if ctx.example_inputs is None:
                raise PrunekitError("iterative kind structured needs example inputs to trace the model")
            n = config.steps
            pcfg = StructuredPrunerConfig(
                target=config.target, importance=config.importance, scope=config.scope, round_to=config.round_to,
                min_channels=config.min_channels, ignore=config.ignore, seed=config.seed,
                recalibrate_bn=config.recalibrate_bn, at_steps=tuple(range(n)),
            )
            # Removal i happens at "step" i: the driver calls step(i) between fine-tunes, not per optimizer step.
            self.pruner = StructuredPruner(model, pcfg, ctx.example_inputs, data=ctx.data)

    def prune(self, index: int, goal: float) -> float:
        """Prune step `index` (0-based) to `goal`; return the reached ratio (structured) or sparsity (mask)."""
        if self.pruner is not None:
            if index == 0:
                self.pruner.prepare()
            else:
                self.pruner.step(index)
            self.layers = self.pruner.report().layers
            return self.pruner.reached
        cfg = self.config
        mcfg = MagnitudeConfig(sparsity=goal, importance=cfg.importance, scope=cfg.scope, ignore=cfg.ignore)
        if cfg.allocation is None:
            self.layers = MagnitudeMethod().apply(self.model, mcfg, self.ctx).layers
        else:
            modules = dict(self.model.named_modules())
            sel = select_targets(self.model, mcfg.targets, mcfg.ignore,
                                 protected=protected_layers(self.model, mcfg, self.ctx), strict=mcfg.strict)
            targeted = _drop_unsupported(sel, modules, parse_pattern(mcfg.pattern), mcfg.strict)
            per_layer = layer_sparsities(self.model, targeted, goal, cfg.allocation,
                                         max_sparsity=1.0 - mcfg.min_density)
            self.layers = run_mask_pruning(self.model, mcfg, self.ctx, "iterative",
                                           lambda _name, w: magnitude(w, norm=cfg.importance),
                                           layer_sparsity=per_layer).layers
        return mask_sparsity(self.model)

    def describe(self) -> str:
        if self.kind == "structured":
            return f"{self.config.target.kind}"  # type: ignore[union-attr]
        return "sparsity"


@register_method
class IterativeMethod(Method):
    """Prune -> fine-tune in steps to a structured or sparsity target, with an optional accuracy-drop budget."""

    name = "iterative"
    config_cls = IterativeConfig

    def apply(self, model: nn.Module, config: IterativeConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        train, val = require_splits(ctx.data, "iterative")
        batches = Batches(train, config.batch_size, config.seed, model_device(model))
        per_round = config.finetune_epochs * batches.per_epoch
        stepper = _Stepper(model, config, ctx)
        label = stepper.describe()
        resume_notes: list[str] = []
        ckpt = find_checkpoint(config, resume_notes)  # type: ignore[arg-type]  (reads only resume_dir)
        distiller = None
        if per_round:  # a frozen copy of the dense model, taken before pruning; on resume, the saved teacher
            distiller = make_distiller(teacher_source(model, ctx), config, ckpt, resume_notes,  # type: ignore[arg-type]
                                       checkpointing=True)
        torch.manual_seed(config.seed)  # dropout and other global-RNG use during fine-tuning
        resumed = resume(config, model, stepper.pruner, ckpt)
        accepted_layers: dict[str, dict[str, Any]] = {}
        if resumed is None:
            dense_acc = evaluate_classifier(model, val)
            notes = [f"dense val accuracy {dense_acc:.4f}"]
            if distiller is not None:
                notes.append(f"fine-tuning distilled from the dense model (T={config.distill.temperature:g}, "
                             f"alpha={config.distill.alpha:g})")
            first = 0
        else:
            dense_acc, notes, accepted_layers = resumed["dense_acc"], resumed["notes"], resumed["layers"]
            first = resumed["done"]
            resume_notes.append(f"resumed from {resumed['path']} after step {first} of {config.steps}")
        notes.extend(resume_notes)
        for i, goal in enumerate(config.step_goals()):
            if i < first:  # done before the interruption: restored from the checkpoint
                continue
            start = time.perf_counter()
            snapshot = copy.deepcopy(model) if config.max_accuracy_drop is not None else None
            plan = get_plan(model)
            known = len(plan.steps) if plan is not None else 0
            reached = stepper.prune(i, goal)
            val_acc: list[float] = []
            if per_round:
                opt, sched = make_optimizer(model, config, per_round)  # type: ignore[arg-type]
                train_steps(model, batches, val, opt=opt, sched=sched, start=i * per_round,
                            total=(i + 1) * per_round, val_acc=val_acc, distiller=distiller, after_step=lambda _: {},
                            save=None, checkpoint_every=None, desc=f"iterative {i + 1}/{config.steps}",
                            progress=ctx.progress)
            acc = val_acc[-1] if val_acc else evaluate_classifier(model, val)
            seconds = time.perf_counter() - start
            line = (f"step {i + 1}/{config.steps}: target {label} {goal:.4f}, reached {reached:.4f}, "
                    f"val accuracy {acc:.4f} after {config.finetune_epochs} epoch(s), {seconds:.1f}s")
            drop = dense_acc - acc
            if config.max_accuracy_drop is not None and drop > config.max_accuracy_drop:
                restore_in_place(model, snapshot)  # type: ignore[arg-type]
                plan = get_plan(model)
                if plan is not None:
                    del plan.steps[known:]
                notes.append(line + " - REJECTED")
                notes.append(f"stopped at step {i + 1}: val accuracy {acc:.4f} is {drop:.4f} below the dense "
                             f"{dense_acc:.4f} (max_accuracy_drop {config.max_accuracy_drop:g}); rolled back to "
                             + (f"step {i}'s model" if i else "the dense model"))
                break
            notes.append(line)
            accepted_layers = stepper.layers
            save_step(config, model, stepper.pruner, i + 1, dense_acc=dense_acc, notes=notes, layers=accepted_layers)
        model.eval()
        result = StageResult(method=self.name, layers=accepted_layers, notes=notes)
        if stepper.pruner is not None:  # what the structured engine warned about (its routine notes are left out)
            keep = ("repair", "INCONCLUSIVE", "without a channel rule", "hf_config", "strict")
            result.notes.extend(n for n in stepper.pruner.notes if n.startswith("no ") or any(k in n for k in keep))
        return result
