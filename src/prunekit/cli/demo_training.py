"""The demo's training-aware step: prune while fine-tuning (gmp, cubic schedule) vs one-shot, at 90% sparsity.

Three copies of the demo's dense model reach the same sparsity of the same layers (layer-scope magnitude, first conv
and classifier protected): one-shot magnitude with no training; one-shot followed by the same fine-tuning budget
(`gmp` with a constant schedule: all pruning at step 0, then exactly gmp's loop); and `gmp` with the cubic schedule
(Zhu & Gupta 2017), which raises the sparsity over the first 3/4 of the steps. Both fine-tuned runs read the train
split (BN re-estimated on it); accuracies are on the held-out test split. The summary line reports the sparsity
measured on the models' masks, never the requested one, and points to the benchmarks of the slower methods.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.api import prune, stage
from prunekit.data import evaluate_classifier
from prunekit.masks import current_mask, masked_modules

SPARSITY = 0.9
EPOCHS = 4  # at 2 epochs gmp and one-shot + fine-tune are within a test image or two of each other
BENCH_POINTER = ("IMP / lottery tickets, movement and head pruning, and 50-98% sparsity with distillation: "
                 "docs/benchmarks.md (gmp, IMP and accuracy-vs-sparsity sections)")


@dataclass(frozen=True)
class TrainingAwareResult:
    """Test accuracies of the three runs, the sparsity measured on each pruned model's masks, and the time taken."""

    target: float
    epochs: int
    dense: float
    oneshot: float
    oneshot_finetuned: float
    gmp: float
    n_test: int
    sparsity: dict[str, float]
    seconds: float


def mask_sparsity(model: nn.Module) -> float:
    """Fraction of zeroed entries over every weight that carries a mask (the pruned layers); 0 without masks."""
    total = pruned = 0
    for _name, module, tname in masked_modules(model):
        keep = current_mask(module, tname)
        total += keep.numel()
        pruned += int((~keep).sum())
    return pruned / total if total else 0.0


def training_aware_run(dense: nn.Module, splits, x: torch.Tensor, *, sparsity: float = SPARSITY,
                       epochs: int = EPOCHS, progress: bool = False) -> tuple[TrainingAwareResult, dict[str, nn.Module]]:
    """Run the three variants on copies of `dense` (left untouched); return the numbers and the pruned models."""
    started = time.perf_counter()
    models = {name: copy.deepcopy(dense) for name in ("one-shot", "one-shot + fine-tune", "gmp cubic")}
    prune(models["one-shot"], stage("magnitude", sparsity=sparsity), x)
    for name, kind in (("one-shot + fine-tune", "constant"), ("gmp cubic", "cubic")):
        prune(models[name], stage("gmp", sparsity=sparsity, epochs=epochs, schedule={"kind": kind}), x,
              data=splits, progress=progress)
    acc = {name: evaluate_classifier(m, splits.test) for name, m in models.items()}
    result = TrainingAwareResult(
        target=sparsity, epochs=epochs, dense=evaluate_classifier(dense, splits.test), oneshot=acc["one-shot"],
        oneshot_finetuned=acc["one-shot + fine-tune"], gmp=acc["gmp cubic"], n_test=len(splits.test),
        sparsity={name: mask_sparsity(m) for name, m in models.items()}, seconds=time.perf_counter() - started)
    return result, models


def training_aware_line(r: TrainingAwareResult) -> str:
    """The demo summary's line: measured sparsity, the three test accuracies, dense, the gmp gain, where the rest is."""
    gain = r.gmp - r.oneshot_finetuned
    return (f"- training-aware, {r.sparsity['gmp cubic']:.1%} sparsity of the inner layers (measured), test split: "
            f"one-shot magnitude without training {r.oneshot:.2%}; one-shot + {r.epochs} epochs fine-tuning "
            f"{r.oneshot_finetuned:.2%}; gmp cubic over the same {r.epochs} epochs {r.gmp:.2%} (dense {r.dense:.2%}): "
            f"gmp vs one-shot + fine-tune {100 * gain:+.2f} points = {round(gain * r.n_test):+d} of {r.n_test} test "
            f"images ({r.seconds:.0f} s). {BENCH_POINTER}")
