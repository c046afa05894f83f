"""Benchmark: lottery tickets (IMP with rewinding) vs the random re-initialization control, with and without
distillation, on the digits CNN (and MNIST-1D) trained from scratch.

Model: the architecture of `prunekit.data.digits_cnn` / `mnist1d_cnn` (SmallResNet), untrained, initialized with
`torch.manual_seed(--seed)`. Each variant runs `prunekit.training.imp.run_imp`: train T = `--epochs` epochs (AdamW, peak
lr `--lr`, warm-up + cosine, batch 64, no augmentation), then `--rounds` times prune `--p` of the remaining weights
of the targeted layers (every conv except the stem; the classifier is protected) by one global magnitude threshold
(no per-layer density floor unless `--min-density`), rewind the survivors, retrain. Variants:
- `init`: rewind to the initial weights (Frankle & Carbin 2019);
- `k=K`: rewind to the weights after K steps of the dense run; rounds train steps K..T (late rewinding);
- `k=K+distill`: as `k=K`, every round distilled from the trained dense model (T=4, alpha=0.9).
Unless `--no-control`, each variant also trains, every round, the same mask from fresh weights (seed + 1000 + round), with
the same steps, data order and loss. Nothing is chosen on the test split; the tables print test accuracy (and the
val accuracy the rounds are reported with). One torch thread.

Run:  python benchmarks/imp_digits.py [--dataset digits] [--p 0.2] [--rounds 10] [--epochs 15] [--rewind 20]
      [--variants init k k+distill] [--no-control] [--no-control-for-distill] [--min-density 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from prunekit.data import load_dataset
from prunekit.data.models import DIGITS_RECIPE, MNIST1D_RECIPE, build_classifier
from prunekit.training.distill import DistillConfig
from prunekit.training.imp import ImpResult, run_imp

RECIPES = {"digits": DIGITS_RECIPE, "mnist1d": MNIST1D_RECIPE}


def run_variant(dataset: str, variant: str, args: argparse.Namespace) -> tuple[ImpResult, float]:
    """One IMP run of `variant` ("init", "k" or "k+distill") on a freshly initialized model; (result, seconds)."""
    data = load_dataset(dataset)
    torch.manual_seed(args.seed)
    model = build_classifier(RECIPES[dataset])
    distill = DistillConfig(temperature=4.0, alpha=0.9) if variant.endswith("distill") else None
    control = args.control and not (distill is not None and args.no_control_for_distill)
    start = time.perf_counter()
    res = run_imp(model, data, rounds=args.rounds, prune_per_round=args.p, epochs=args.epochs, lr=args.lr,
                  rewind="init" if variant == "init" else args.rewind, seed=args.seed, control=control,
                  min_density=args.min_density, distill=distill, progress=args.progress)
    return res, time.perf_counter() - start


def render(dataset: str, results: dict[str, ImpResult], args: argparse.Namespace) -> str:
    """One table: a row per round, ticket and control test accuracy (val in brackets) per variant."""
    names = list(results)
    head = ["round", "sparsity"]
    for v in names:
        label = v.replace("k", f"k={args.rewind}", 1) if v.startswith("k") else v
        head += [f"{label} ticket", f"{label} control"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    first = results[names[0]]
    for i, r in enumerate(first.rounds):
        row = [str(r.round), f"{100 * r.sparsity:.1f}%"]
        for v in names:
            x = results[v].rounds[i]
            row.append(f"{100 * x.test_accuracy:.1f} ({100 * x.val_accuracy:.1f})")
            ctl = "-" if x.control_test_accuracy is None else (
                f"{100 * x.control_test_accuracy:.1f} ({100 * x.control_val_accuracy:.1f})")
            row.append(ctl)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="digits")
    parser.add_argument("--p", type=float, default=0.2, help="fraction of the remaining weights pruned per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=15, help="epochs of every training run")
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--rewind", type=int, default=20, help="k of late rewinding (steps)")
    parser.add_argument("--variants", nargs="+", choices=["init", "k", "k+distill"],
                        default=["init", "k", "k+distill"])
    parser.add_argument("--no-control", dest="control", action="store_false")
    parser.add_argument("--no-control-for-distill", action="store_true")
    parser.add_argument("--min-density", type=float, default=0.0, help="per-layer density floor (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results, seconds = {}, {}
    for variant in args.variants:
        results[variant], seconds[variant] = run_variant(args.dataset, variant, args)
        print(f"{variant}: {seconds[variant]:.0f} s, {results[variant].total_steps} steps per training",
              file=sys.stderr, flush=True)
    res = results[args.variants[0]]
    print(f"## IMP on {args.dataset}: p={args.p}, {args.rounds} rounds, {args.epochs} epochs "
          f"({res.total_steps} steps) per training, seed {args.seed}")
    print(f"targeted: {len(res.targeted)} layers; skipped: {', '.join(res.skipped)}")
    print("test accuracy % (val in brackets)\n")
    print(render(args.dataset, results, args))
    print("\nwall time: " + ", ".join(f"{v} {s:.0f} s" for v, s in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
