"""Benchmark: prunekit's `structured` method next to Torch-Pruning (TP), same machine, same run.

Part 1 (`--part time`): time to build the dependency graph and prune to half the MACs, on random-init torchvision
ResNet-50 and ViT-B/16 (224 px, batch 1). prunekit: one structured stage (`macs_ratio: 0.5`, layer scope, l2
importance), timed with `verify` on (the default: the equivalence check runs after surgery) and off. TP:
`MetaPruner` with `MagnitudeImportance(p=2)` (group mean reduction, mean normalizer: the same scoring as prunekit's
l2), layer-wise `pruning_ratio`, the classifier ignored (`num_heads` given for `nn.MultiheadAttention`); TP
takes a channel ratio, not a MACs target, so its ratio is searched first (secant steps from `1 - sqrt(0.5)`, at
most 3 runs, untimed) and the timed runs use the result. Both results are counted by the same counter
(`prunekit.eval.count_model`). The timed region is graph build + importance + selection + surgery (+ check):
prunekit's `StructuredMethod.apply`, TP's `MetaPruner(...)` + `step()`; `DependencyGraph.build` alone is timed too
(where prunekit's time goes).

Part 2 (`--part accuracy`): the cached digits CNN and MNIST-1D CNN (`prunekit.data`), pruned to 2x fewer MACs by
each tool (l1 importance, layer scope; TP's ratio bisected to prunekit's reached MACs ratio), then fine-tuned with
the same budget (`prunekit.data.train_classifier`: same epochs, AdamW + one-cycle, lr, batch, seed) and scored on the
held-out test split, for each seed.

Run:  python benchmarks/structured_vs_tp.py [--part time accuracy] [--models resnet50 vit_b_16] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit.api import stage
from prunekit.eval import count_model
from prunekit.methods.base import PruneContext
from prunekit.registry import METHODS

TARGET = 0.5


def prunekit_prune(model: nn.Module, x: torch.Tensor, importance: str, verify: bool) -> list[str]:
    """One structured stage on `model` in place (the method itself: no report building); returns its notes."""
    st = stage("structured", target={"macs_ratio": TARGET}, importance=importance, scope="layer", verify=verify)
    result = METHODS.get("structured")().apply(model, st.config, PruneContext(example_inputs=x))
    return list(result.notes)


def tp_prune(model: nn.Module, x: torch.Tensor, p: int, ratio: float) -> None:
    """Torch-Pruning: MetaPruner, magnitude importance, layer-wise `ratio` of channels removed, classifier kept."""
    import torch_pruning as tp

    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=p, group_reduction="mean", normalizer="mean"),
        pruning_ratio=ratio, ignored_layers=[last], num_heads=heads, global_pruning=False,
    )
    pruner.step()


def macs_params(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    c = count_model(model, x)
    return int(c.macs or 0), int(c.params)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def build(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def tp_ratio_for_half(dense: nn.Module, x: torch.Tensor, macs0: int) -> tuple[float, list[str]]:
    """TP takes a channel ratio: secant steps on log(MACs ratio) vs log(1 - ratio), at most 3 runs; the closest."""
    history, tried, r = [], [], 1 - math.sqrt(TARGET)
    for _ in range(3):
        model = copy.deepcopy(dense)
        tp_prune(model, x, 2, r)
        q = macs_params(model, x)[0] / macs0
        history.append(f"{r:.3f} -> {q:.3f}")
        tried.append((abs(q - TARGET), r))
        if abs(q - TARGET) < 0.01 or not 0 < q < 1:
            break
        k = math.log(q) / math.log(1 - r)  # MACs ~ (1 - r)^k locally
        r = min(0.95, 1 - TARGET ** (1 / k))
    return min(tried)[1], history


def part_time(models: list[str], repeat: int) -> None:
    """Table 1: pruning time (median of `repeat` interleaved runs) and reached MACs / params, prunekit vs TP."""
    from prunekit.graph import DependencyGraph

    x = torch.randn(1, 3, 224, 224)
    print(f"Times: median of {repeat} interleaved runs (each on a fresh copy of the model).")
    print("| model | tool | time (s) | MACs ratio reached | params ratio | prunekit / TP time |")
    print("|---|---|---|---|---|---|")
    for name in models:
        dense = build(name)
        macs0, params0 = macs_params(dense, x)
        try:
            r_tp, history = tp_ratio_for_half(dense, x, macs0)
            tp_error = None
        except Exception as exc:  # noqa: BLE001 - a benchmark records the competitor's failure
            traceback.print_exc(file=sys.stderr)
            tp_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        tools: dict[str, Callable[[nn.Module], Any]] = {
            "prunekit (verify on)": lambda m: prunekit_prune(m, x, "l2", True),
            "prunekit (verify off)": lambda m: prunekit_prune(m, x, "l2", False),
            "prunekit: DependencyGraph.build alone (torch.export + analysis)": lambda m: DependencyGraph.build(m, x),
        }
        if tp_error is None:
            label = f"Torch-Pruning (ratio {r_tp:.3f}; ratio search {', '.join(history)})"
            tools[label] = lambda m: tp_prune(m, x, 2, r_tp)
        times: dict[str, list[float]] = {k: [] for k in tools}
        results: dict[str, nn.Module] = {}
        for i in range(repeat):
            for label in (list(tools) if i % 2 == 0 else list(tools)[::-1]):
                model = copy.deepcopy(dense)
                secs, out = timed(lambda: tools[label](model))
                times[label].append(secs)
                results[label] = model
                if i == 0 and label.startswith("prunekit (verify"):
                    print(f"# {name} {label}: " + " | ".join(out), file=sys.stderr)
        tp_label = next((k for k in tools if k.startswith("Torch")), None)
        tp_secs = statistics.median(times[tp_label]) if tp_label else None
        for label in tools:
            secs = statistics.median(times[label])
            if "alone" in label:
                mr = pr = "-"
            else:
                macs, params = macs_params(results[label], x)
                mr, pr = f"{macs / macs0:.3f}", f"{params / params0:.3f}"
            ratio = f"{secs / tp_secs:.2f}" if tp_secs and label.startswith("prunekit") else ""
            print(f"| {name} | {label} | {secs:.2f} | {mr} | {pr} | {ratio} |", flush=True)
        if tp_error is not None:
            print(f"| {name} | Torch-Pruning | failed | {tp_error} | | |", flush=True)


def tp_to_macs(dense: nn.Module, x: torch.Tensor, goal: float, p: int) -> tuple[nn.Module, float, float]:
    """Bisect TP's layer-wise ratio until its MACs ratio is within 0.5% of `goal` (or 14 steps)."""
    macs0 = macs_params(dense, x)[0]
    lo, hi = 0.0, 0.9
    best: tuple[float, nn.Module, float] | None = None
    for _ in range(14):
        r = (lo + hi) / 2
        model = copy.deepcopy(dense)
        tp_prune(model, x, p, r)
        q = macs_params(model, x)[0] / macs0
        if best is None or abs(q - goal) < abs(best[0] - goal):
            best = (q, model, r)
        if abs(q - goal) < 0.005:
            break
        lo, hi = (r, hi) if q > goal else (lo, r)
    assert best is not None
    return best[1], best[2], best[0]


def part_accuracy(seeds: list[int], epochs: int, lr: float) -> None:
    """Table 2: held-out accuracy after 2x fewer MACs and the same fine-tuning, prunekit vs TP."""
    from prunekit.data import (
        DIGITS_RECIPE, MNIST1D_RECIPE, digits_cnn, evaluate_classifier, load_dataset, mnist1d_cnn, train_classifier,
    )

    print(f"Fine-tuning: {epochs} epochs, AdamW one-cycle, peak lr {lr}, the model recipe's batch / weight decay / "
          f"label smoothing / augmentation; seeds {seeds}.")
    print("| model | variant | MACs ratio | params ratio | acc. after pruning | acc. after fine-tuning (per seed) "
          "| mean |")
    print("|---|---|---|---|---|---|---|")
    for name, loader, recipe, shape in (("digits_cnn", digits_cnn, DIGITS_RECIPE, (1, 1, 8, 8)),
                                        ("mnist1d_cnn", mnist1d_cnn, MNIST1D_RECIPE, (1, 1, 40))):
        data = load_dataset(recipe.dataset)
        dense = loader(progress=False).eval()
        x = torch.randn(*shape)
        macs0, params0 = macs_params(dense, x)
        dense_acc = evaluate_classifier(dense, data.test)
        print(f"| {name} | dense | 1.000 | 1.000 | {dense_acc:.2%} | - | {dense_acc:.2%} |", flush=True)
        pk = copy.deepcopy(dense)
        prunekit_prune(pk, x, "l1", True)
        pk_macs = macs_params(pk, x)[0] / macs0
        variants = {"prunekit l1": pk}
        try:
            tp_model, r, _ = tp_to_macs(dense, x, pk_macs, p=1)
            variants[f"Torch-Pruning l1 (ratio {r:.3f})"] = tp_model
        except Exception as exc:  # noqa: BLE001
            print(f"| {name} | Torch-Pruning | failed: {type(exc).__name__}: {exc} | | | | |")
        for label, model in variants.items():
            macs, params = macs_params(model, x)
            after = evaluate_classifier(model, data.test)
            accs = []
            for seed in seeds:
                tuned = copy.deepcopy(model)
                train_classifier(tuned, data.train, epochs=epochs, lr=lr, batch_size=recipe.batch_size, seed=seed,
                                 progress=False, weight_decay=recipe.weight_decay,
                                 label_smoothing=recipe.label_smoothing, augment=recipe.augment)
                accs.append(evaluate_classifier(tuned, data.test))
            per = ", ".join(f"{a:.2%}" for a in accs)
            print(f"| {name} | {label} | {macs / macs0:.3f} | {params / params0:.3f} | {after:.2%} | {per} | "
                  f"{statistics.mean(accs):.2%} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["time", "accuracy"], choices=["time", "accuracy"])
    ap.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per tool (median)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after pruning")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak fine-tuning learning rate")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torch_pruning

    print(f"torch {torch.__version__}, torch-pruning {getattr(torch_pruning, '__version__', '?')}, "
          f"{torch.get_num_threads()} thread(s)")
    start = time.perf_counter()
    if "time" in args.part:
        part_time(args.models, args.repeat)
    if "accuracy" in args.part:
        part_accuracy(args.seeds, args.epochs, args.lr)
    print(f"run took {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
