"""Benchmark: one-shot structured pruning + fine-tuning vs iterative prune -> fine-tune, same total epochs, digits CNN.

Model: the cached, trained `prunekit.data.digits_cnn` (SmallResNet, ~42k parameters). For each MACs target and seed:
- one-shot: the `iterative` method with steps=1 and finetune_epochs=E (one removal to the target, then E epochs);
- iterative: steps=S and finetune_epochs=E/S (S removals on the geometric schedule, E/S epochs after each).
Both: l1 channel importance, BN statistics re-estimated right after each removal, AdamW lr 1e-3 with cosine decay
per fine-tune, batch 64, the seed driving the batch order. Decisions read the validation split only; this script
alone reads the test split, for the table. MACs and parameters: `prunekit.eval.count_model` on one 8x8 image.
Latency: p50 over `--iters` runs of batch 32, one torch thread, dense and pruned measured in alternating order for
`--rounds` rounds; the ratio is the median over rounds of pruned / dense.

Run:  python benchmarks/iterative_digits.py [--targets 0.5 0.3] [--seeds 0 1] [--epochs 3] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import prunekit
from prunekit.api import stage
from prunekit.data import digits_cnn, evaluate_classifier, load_dataset
from prunekit.eval import count_model
from prunekit.eval.measure import measure_latency


def latency_ratio(dense: torch.nn.Module, pruned: torch.nn.Module, x: torch.Tensor, rounds: int, iters: int) -> float:
    """Median over interleaved rounds of pruned p50 / dense p50."""
    ratios = []
    for i in range(rounds):
        order = (dense, pruned) if i % 2 == 0 else (pruned, dense)
        got = {id(m): measure_latency(m, x, warmup=3, iters=iters).p50_ms for m in order}
        ratios.append(got[id(pruned)] / got[id(dense)])
    return statistics.median(ratios)


def run(target: float, steps: int, epochs_per_step: int, seed: int, data, x1: torch.Tensor) -> tuple:
    """Prune a fresh copy of the trained model; (model, val accuracy noted, seconds)."""
    model = digits_cnn(progress=False)
    start = time.perf_counter()
    report = prunekit.prune(model, stage("iterative", kind="structured", target={"macs_ratio": target}, steps=steps,
                                         finetune_epochs=epochs_per_step, seed=seed), x1, data=data)
    notes = report.stages[0]["notes"]
    val = float(notes[-1].split("val accuracy ")[1].split()[0])
    return model.eval(), val, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.3], help="MACs ratios that remain")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=3, help="total fine-tune epochs of either schedule")
    ap.add_argument("--steps", type=int, default=3, help="removal steps of the iterative schedule (divides --epochs)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args(argv)
    if args.epochs % args.steps:
        ap.error("--steps must divide --epochs (same total fine-tune epochs)")
    torch.set_num_threads(1)
    data = load_dataset("digits")
    dense = digits_cnn(progress=False).eval()
    x1 = data.train[0][0].unsqueeze(0)
    x32 = torch.stack([data.test[i][0] for i in range(32)])
    base = count_model(dense, x1)
    dense_test = evaluate_classifier(dense, data.test)
    print(f"dense digits CNN: test accuracy {100 * dense_test:.2f}%, {base.params} params, {base.macs} MACs\n")
    print("| MACs target | schedule | seed | test acc % | val acc % | params ratio | MACs ratio | latency ratio "
          "(b32, 1 thread) | seconds |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[tuple[float, str], list[float]] = {}
    for target in args.targets:
        for seed in args.seeds:
            for name, steps, per in (("one-shot", 1, args.epochs),
                                     (f"iterative x{args.steps}", args.steps, args.epochs // args.steps)):
                model, val, secs = run(target, steps, per, seed, data, x1)
                count = count_model(model, x1)
                test = evaluate_classifier(model, data.test)
                lat = latency_ratio(dense, model, x32, args.rounds, args.iters)
                summary.setdefault((target, name), []).append(test)
                print(f"| {target:g} | {name} ({steps} x {per} ep) | {seed} | {100 * test:.2f} | {100 * val:.2f} | "
                      f"{count.params / base.params:.3f} | {count.macs / base.macs:.3f} | {lat:.3f} | {secs:.1f} |",
                      flush=True)
    print("\n| MACs target | schedule | mean test acc % over seeds |")
    print("|---:|---|---:|")
    for (target, name), accs in summary.items():
        print(f"| {target:g} | {name} | {100 * statistics.mean(accs):.2f} ({len(accs)} seeds) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
