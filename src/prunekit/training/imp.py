"""Iterative magnitude pruning with rewinding: lottery tickets (Frankle & Carbin 2019; late rewinding, Frankle 2020).

One run: train the dense model for T steps (saving the weights after k steps when rewinding to iteration k), then
`rounds` times: prune `prune_per_round` of the *remaining* weights of the targeted layers by one exact global
magnitude threshold (`patterns.select_global`; earlier masks are kept, so round r leaves (1-p)^r of the weights up to
rounding), rewind every surviving weight (and BatchNorm buffers) to the saved values exactly, and train steps k..T
of the same run again (same batches, same learning rates). Beside each round, the random re-initialization control
trains the same mask from fresh weights (another seed) with the same steps, loss and data: when the ticket does not
beat it, the winning initialization does not matter at that sparsity.

Nothing is decided on the test split: rounds run as configured, and the test accuracies are collected for the final
table only (`ImpResult.table`). With `distill`, the teacher is a frozen copy of the dense model after its training
(round 0), and every later training (ticket and control) uses the distillation loss.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.config.targets import select_targets
from prunekit.data.loops import evaluate_classifier
from prunekit.errors import PrunekitError
from prunekit.layers import execution_order as find_order
from prunekit.layers import matrix_to_weight, output_layer_names, weight_as_matrix
from prunekit.masks import attach_mask, current_mask, import_torch_prune, masked_modules
from prunekit.methods.base import PruneContext
from prunekit.methods.magnitude.config import MagnitudeConfig
from prunekit.methods.mask_pipeline import run_mask_pruning
from prunekit.patterns import n_to_prune, select_global
from prunekit.training.allocation import AllocationConfig, layer_sparsities
from prunekit.training.distill import DistillConfig, Distiller
from prunekit.training.imp_loop import cross_entropy, reinitialized, restore, snapshot, step_plan, train_range
from prunekit.training.imp_resume import fingerprint, load_round, restore_round, save_round


@dataclass(frozen=True)
class ImpRound:
    """One level of the run: round 0 is the dense model, round r has pruned r times."""

    round: int
    sparsity: float
    remaining: int
    val_accuracy: float
    test_accuracy: float
    train_loss: float
    control_val_accuracy: float | None = None
    control_test_accuracy: float | None = None


@dataclass
class ImpResult:
    """Every round's numbers, which layers were pruned (and why others were not), and the rewind point."""

    rounds: list[ImpRound] = field(default_factory=list)
    targeted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    rewind_step: int = 0
    total_steps: int = 0
    resumed_from: str | None = None  # the checkpoint a resumed run continued from

    def table(self) -> str:
        """Markdown table: round, sparsity, ticket val / test accuracy, control val / test accuracy (in %)."""

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}"

        lines = ["| round | sparsity | ticket val | ticket test | control val | control test |",
                 "|---:|---:|---:|---:|---:|---:|"]
        for r in self.rounds:
            lines.append(f"| {r.round} | {100 * r.sparsity:.1f}% | {pct(r.val_accuracy)} | {pct(r.test_accuracy)} "
                         f"| {pct(r.control_val_accuracy)} | {pct(r.control_test_accuracy)} |")
        return "\n".join(lines)


def check_imp_args(rounds: Any, prune_per_round: Any, rewind: Any, epochs: Any) -> int:
    """Validate the IMP arguments; return the rewind step (0 for "init").

    Raises:
        PrunekitError: naming the bad value and what is valid.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise PrunekitError(f"rounds {rounds!r} is invalid: it must be an integer >= 1")
    if isinstance(prune_per_round, bool) or not isinstance(prune_per_round, numbers.Real) \
            or not 0 < prune_per_round < 1:
        raise PrunekitError(f"prune_per_round {prune_per_round!r} is invalid: it must lie in (0, 1) "
                            "(the fraction of the remaining weights pruned each round, e.g. 0.2)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise PrunekitError(f"epochs {epochs!r} is invalid: it must be an integer >= 1")
    if rewind == "init":
        return 0
    if isinstance(rewind, bool) or not isinstance(rewind, int) or rewind < 0:
        raise PrunekitError(f"rewind {rewind!r} is invalid: use 'init' (the weights at the start) or an integer "
                            "k >= 0 (the weights after k training steps: late rewinding)")
    return rewind


def _protected(model: nn.Module, order: list[str], protect_first: bool, protect_last: bool) -> dict[str, str]:
    guards: dict[str, str] = {}
    if protect_last and order:
        for name in output_layer_names(model) | {order[-1]}:
            guards[name] = "last layer / output head (protected; set protect_last: false to prune it)"
    if protect_first and order:
        guards[order[0]] = "first layer, reads the input (protected; set protect_first: false to prune it)"
    return guards


def prune_remaining(model: nn.Module, layers: Sequence[str], fraction: float, min_density: float = 0.0) -> int:
    """Prune `fraction` of the still-unpruned weights of `layers` by one global |w| threshold; return weights left.

    Exact count: n_to_prune(remaining, fraction) more weights (round half up); masks AND into existing ones.
    """
    modules = dict(model.named_modules())

    def score_fn(name: str) -> Callable[[], torch.Tensor]:
        def scores() -> torch.Tensor:
            module = modules[name]
            with torch.no_grad():
                s = weight_as_matrix(module, module.weight.detach()).abs().float()
                keep = current_mask(module)
                if keep is not None:
                    s = s.masked_fill(~weight_as_matrix(module, keep), float("-inf"))
            return s
        return scores

    fns = [score_fn(n) for n in layers]
    sizes, already, caps = [], [], []
    for fn in fns:
        s = fn()
        sizes.append(s.numel())
        already.append(int(torch.isneginf(s).sum()))
        caps.append(max(already[-1], math.floor((1.0 - min_density) * s.numel() + 1e-9)))
    remaining = sum(sizes) - sum(already)
    n_prune = sum(already) + n_to_prune(remaining, fraction)
    selection = select_global(fns, n_prune, max_prune=caps, names=list(layers))
    for i, name in enumerate(layers):
        module = modules[name]
        keep = selection.keep_mask(i, fns[i]())
        attach_mask(module, matrix_to_weight(module, keep, module.weight.shape))
    return sum(sizes) - n_prune


def prune_allocated(model: nn.Module, layers: Sequence[str], level: float, alloc: AllocationConfig,
                    min_density: float = 0.0) -> int:
    """Prune `layers` by |w| to the per-layer sparsities `alloc` gives for the overall `level`; return weights left.

    Each layer's sparsity is its total (earlier masks are kept: already-pruned weights score -inf).
    """
    per_layer = layer_sparsities(model, list(layers), level, alloc, max_sparsity=1.0 - min_density)
    cfg = MagnitudeConfig(sparsity=level, targets=tuple(layers), ignore=(), protect_first=False,
                          protect_last=False, min_density=0.0)
    run_mask_pruning(model, cfg, PruneContext(), "imp",
                     lambda _n, w: w.abs().float(), layer_sparsity=per_layer)
    modules = dict(model.named_modules())
    return sum(int(m.sum()) if (m := current_mask(modules[n])) is not None else modules[n].weight.numel()
               for n in layers)


def _fresh_control(template: nn.Module, ticket: nn.Module, seed: int,
                   model_fn: Callable[[], nn.Module] | None) -> nn.Module:
    if model_fn is None:
        control = reinitialized(template, seed)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            control = model_fn()
    device = next(ticket.parameters()).device
    control.to(device)
    modules = dict(control.named_modules())
    for name, module, tname in masked_modules(ticket):
        if name not in modules:
            raise PrunekitError(f"control: model_fn's model has no module {name!r}; build the same architecture")
        attach_mask(modules[name], current_mask(module, tname), tname)
    return control


def run_imp(model: nn.Module, data: Any, *, rounds: int, prune_per_round: float, epochs: int,
            rewind: str | int = "init", lr: float = 4e-3, batch_size: int = 64, weight_decay: float = 5e-4,
            seed: int = 0, control: bool = True, targets: Sequence[str] | None = None, ignore: Sequence[str] = (),
            protect_first: bool = True, protect_last: bool = True, min_density: float = 0.02,
            distill: DistillConfig | None = None, model_fn: Callable[[], nn.Module] | None = None,
            order: list[str] | None = None, progress: bool = False,
            allocation: AllocationConfig | None = None, checkpoint_dir: str | None = None,
            resume_dir: str | None = None) -> ImpResult:
    """Find a lottery ticket in `model` (in place: it ends as the last round's trained, masked ticket).

    Args:
        model: a classifier (its weights now are the "init" rewind point; usually freshly initialized).
        data: a DatasetSplits-like object with `train`, `val`, `test` datasets of `(x, y)` pairs.
        rounds: pruning rounds (>= 1); round r keeps about (1 - prune_per_round)^r of the targeted weights.
        prune_per_round: fraction of the remaining weights pruned per round, in (0, 1).
        epochs: epochs per training run (the dense one and each round's).
        rewind: "init" or k: surviving weights go back to their values after k steps of the dense run.
        lr, batch_size, weight_decay, seed: AdamW training (warm-up + cosine learning rate); seed fixes the batches.
        control: also train the random re-initialization control each round (seed + 1000 + round).
        targets, ignore, protect_first, protect_last, min_density: which layers, as in mask pruning.
        distill: distil every round's training from the trained dense model.
        model_fn: builds a fresh model for the control (default: `reset_parameters` of every module).
        order: prunable modules in execution order (default: traced on one training batch).
        progress: show a progress bar over the trainings.
        allocation: split each round's overall level 1 - (1 - p)^r across layers (uniform / erk / lamp /
            sensitivity) instead of one global magnitude threshold.
        checkpoint_dir: write a round checkpoint (`training.imp_resume`) after the dense run and every round.
        resume_dir: continue from the latest round checkpoint there (start afresh when it holds none); also the
            checkpoint folder when `checkpoint_dir` is unset.
    """
    from tqdm.auto import tqdm

    k = check_imp_args(rounds, prune_per_round, rewind, epochs)
    for split in ("train", "val", "test"):
        if not hasattr(data, split):
            raise PrunekitError(f"imp needs data with train / val / test splits (a DatasetSplits, e.g. "
                                f"prunekit.data.load_dataset('digits')); got {type(data).__name__} without {split!r}")
    plan = step_plan(len(data.train), epochs=epochs, batch_size=batch_size, seed=seed)
    if k >= len(plan):
        raise PrunekitError(f"rewind {k} is past the end of training: {len(plan)} steps ({epochs} epochs of "
                            f"{len(plan) // epochs}); use a smaller k or 'init'")
    import_torch_prune(model)
    if order is None:
        device = next(model.parameters()).device
        x0 = torch.stack([data.train[i][0] for i in range(min(2, len(data.train)))]).to(device)
        order = find_order(model, x0)
    sel = select_targets(model, targets, ignore, protected=_protected(model, order, protect_first, protect_last))
    result = ImpResult(targeted=list(sel.targeted), skipped=dict(sel.skipped), rewind_step=k, total_steps=len(plan))
    template = copy.deepcopy(model) if control and model_fn is None else model
    dense_shell = copy.deepcopy(model) if distill is not None else None  # receives the teacher's weights
    saved = {"state": snapshot(model)}
    save_dir = checkpoint_dir or resume_dir
    settings = fingerprint(prune_per_round=prune_per_round, rewind=k, epochs=epochs, lr=lr, batch_size=batch_size,
                           weight_decay=weight_decay, seed=seed, control=control, targets=sel.targeted,
                           min_density=min_density, n_train=len(data.train), model_fn=model_fn is not None,
                           distill=None if distill is None else distill.model_dump_json(),
                           allocation=None if allocation is None else allocation.model_dump_json())
    ck = load_round(resume_dir, settings, rounds) if resume_dir is not None else None

    def save_at_k(done: int) -> None:
        if done == k:
            saved["state"] = snapshot(model)

    def evaluate(m: nn.Module) -> tuple[float, float]:
        return evaluate_classifier(m, data.val), evaluate_classifier(m, data.test)

    def checkpoint(r: int) -> None:
        if save_dir is not None:
            save_round(save_dir, r, model, rewind=saved["state"], teacher=teacher, rounds=result.rounds,
                       settings=settings)

    train = dict(lr=lr, weight_decay=weight_decay)
    modules = dict(model.named_modules())
    units = sum(modules[n].weight.numel() for n in sel.targeted)
    first = 1
    teacher: dict[str, torch.Tensor] | None = None
    if ck is not None:
        restore_round(ck, model)
        saved["state"] = dict(ck.extra["rewind"])
        teacher = dict(ck.extra["teacher"]) or None
        result.rounds = [ImpRound(**r) for r in ck.extra["rounds"]]
        first = ck.step + 1
        result.resumed_from = f"{ck.path} (round {ck.step})"
    bar = tqdm(total=rounds + 1, initial=first if ck is not None else 0, desc="imp", disable=not progress,
               leave=False)
    try:
        if ck is None:
            loss = train_range(model, data.train, plan, start=0, on_step=save_at_k, **train)
            remaining = units - sum(int((~m).sum()) for m in (current_mask(modules[n]) for n in sel.targeted)
                                    if m is not None)
            result.rounds.append(ImpRound(0, 1 - remaining / units, remaining, *evaluate(model), loss))
            teacher = snapshot(model) if distill is not None else None
            checkpoint(0)
            bar.update(1)
        loss_fn = cross_entropy
        if distill is not None and dense_shell is not None and teacher is not None:
            restore(dense_shell, teacher)
            loss_fn = Distiller(dense_shell, distill).loss
        for r in range(first, rounds + 1):
            if allocation is None:
                remaining = prune_remaining(model, sel.targeted, prune_per_round, min_density)
            else:
                level = 1.0 - (1.0 - prune_per_round) ** r
                remaining = prune_allocated(model, sel.targeted, level, allocation, min_density)
            restore(model, saved["state"])
            loss = train_range(model, data.train, plan, start=k, loss_fn=loss_fn, **train)
            ticket = evaluate(model)
            ctl: tuple[float | None, float | None] = (None, None)
            if control:
                # Same mask, fresh weights, and the ticket's own budget: steps k..T of the same run.
                ctl_model = _fresh_control(template, model, seed + 1000 + r, model_fn)
                train_range(ctl_model, data.train, plan, start=k, loss_fn=loss_fn, **train)
                ctl = evaluate(ctl_model)
                del ctl_model
            result.rounds.append(ImpRound(r, 1 - remaining / units, remaining, *ticket, loss, *ctl))
            checkpoint(r)
            bar.update(1)
            bar.set_postfix(sparsity=f"{1 - remaining / units:.3f}", val=f"{ticket[0]:.3f}")
    finally:
        bar.close()
    for name in sel.targeted:
        keep = current_mask(modules[name])
        result.layer_sparsity[name] = 1.0 - keep.float().mean().item() if keep is not None else 0.0
    return result
