"""Benchmark: gradual magnitude pruning (gmp, cubic schedule) vs one-shot magnitude + fine-tuning, digits CNN.

For each sparsity, starting from the cached pretrained digits CNN (`prunekit.data.digits_cnn`):

- one-shot: `magnitude` (layer scope, l1) at the sparsity, accuracy right away, then fine-tuned for `--epochs`
  epochs with `prunekit.data.train_classifier` (AdamW, one-cycle LR peaking at `--lr`, batch 64, seed 0);
- one-shot in the gmp loop: `gmp` with `schedule: {kind: constant}` (all pruning at step 0, then exactly gmp's
  training loop), which isolates the schedule from the optimizer / LR recipe;
- gmp: `gmp` with the default cubic schedule (sparsity rises over the first 3/4 of the steps) for the same
  `--epochs` epochs (AdamW, cosine LR from `--lr`, batch 64, seed 0, BN re-estimated at the end).

Both prune the same layers (first conv and classifier protected). Accuracy is on the held-out test split, which
neither run reads; params / non-zeros count every parameter of the finalized model. One torch thread.

Run:  python benchmarks/gmp_digits.py --sparsities 0.8,0.9,0.95 --epochs 5
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import prunekit
from prunekit.api import stage
from prunekit.data import digits_cnn, evaluate_classifier, example_inputs, load_dataset, train_classifier


def _counts(model: torch.nn.Module) -> tuple[int, int]:
    plain = prunekit.finalize(copy.deepcopy(model))
    params = sum(p.numel() for p in plain.parameters())
    nonzero = sum(int((p != 0).sum()) for p in plain.parameters())
    return params, nonzero


def run(sparsities: list[float], epochs: int, lr: float) -> list[dict]:
    torch.set_num_threads(1)
    data = load_dataset("digits")
    dense = digits_cnn(progress=False)
    x = example_inputs("digits")
    rows = [{"run": "dense", "sparsity": 0.0, "test": evaluate_classifier(dense, data.test), "oneshot": None,
             "counts": _counts(dense), "seconds": 0.0}]
    for s in sparsities:
        model = copy.deepcopy(dense)
        t = time.perf_counter()
        prunekit.prune(model, stage("magnitude", sparsity=s), x)
        right_away = evaluate_classifier(model, data.test)
        train_classifier(model, data.train, epochs=epochs, lr=lr, batch_size=64, seed=0, progress=False)
        rows.append({"run": "one-shot + fine-tune", "sparsity": s, "oneshot": right_away,
                     "test": evaluate_classifier(model, data.test), "counts": _counts(model),
                     "seconds": time.perf_counter() - t})
        for label, kind in (("one-shot in gmp loop (constant)", "constant"), ("gmp cubic", "cubic")):
            model = copy.deepcopy(dense)
            t = time.perf_counter()
            prunekit.prune(model, stage("gmp", sparsity=s, epochs=epochs, lr=lr, batch_size=64,
                                        schedule={"kind": kind}), x, data=data)
            rows.append({"run": label, "sparsity": s, "oneshot": None, "test": evaluate_classifier(model, data.test),
                         "counts": _counts(model), "seconds": time.perf_counter() - t})
    return rows


def render(rows: list[dict], epochs: int, lr: float) -> str:
    lines = [f"digits CNN, {epochs} epochs of training after / while pruning, lr {lr:g}, test split (held out)", "",
             "| run | target sparsity | test acc right after one-shot | test acc | params | non-zeros | time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        right = f"{r['oneshot']:.4f}" if r["oneshot"] is not None else "-"
        params, nz = r["counts"]
        lines.append(f"| {r['run']} | {r['sparsity']:.0%} | {right} | {r['test']:.4f} | {params:,} | {nz:,} "
                     f"({nz / params:.1%}) | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsities", default="0.8,0.9,0.95")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    sparsities = [float(v) for v in args.sparsities.split(",")]
    print(render(run(sparsities, args.epochs, args.lr), args.epochs, args.lr))


if __name__ == "__main__":
    main()
