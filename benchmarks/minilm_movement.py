"""Movement vs magnitude pruning of MiniLM's encoder on the Shakespeare genre task, at high sparsity.

    python benchmarks/minilm_movement.py [--steps 120] [--sparsities 0.9,0.97] [--methods hard,gmp]
                                         [--lr 1e-4] [--score-lr 1e-2] [--score-init constant] [--warmup 10]
                                         [--batch-size 32]
                                         [--soft-lambda 1e-4] [--soft-threshold -0.1] [--json out.json]

Task and model: see benchmarks/_minilm_genre.py (first 3000 train / 600 val / 900 test passages of
shakespeare-genre, MiniLM tokenizer, 64 tokens; BertForSequenceClassification on all-MiniLM-L6-v2, 3 labels).
Start: every pruned run starts from the same cached fine-tuned dense classifier (`dense_classifier()`), not from
the pretrained encoder as Sanh et al. do: on a shared CPU this is what fits (the dense model already knows the task,
so the runs measure how well each method keeps it while pruning).

Pruned: the 36 nn.Linear layers of the 6 encoder blocks (query / key / value / attention output / intermediate /
output), each to the same sparsity; embeddings, pooler and classifier stay dense (protect_first: false, so the
first query layer is pruned too). Every method gets the same steps, batches (seed 0), AdamW, lr with 10% linear
warm-up then cosine decay, and a cubic sparsity schedule from `--warmup` to 3/4 of the steps:
- gmp: `prunekit.training.Pruner` (magnitude, re-scored at every step; optimizer state zeroed on pruned weights);
- movement hard: `prunekit.training.movement.MovementPruner`, top-k per layer, scores from 0 (Sanh et al.) or |W|
  (`--score-init magnitude`), AdamW on the scores at `--score-lr`, no weight decay;
- movement soft: threshold `--soft-threshold` with lambda `--soft-lambda` (its sparsity is whatever they give).
The word embeddings are frozen in the pruned runs (all methods alike; `--train-embeddings` trains them): a dense
30522x384 gradient and its AdamW update are a third of a CPU step. Test accuracy is measured once per run after
`finalize` (the val split is not used: nothing is tuned here).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import _minilm_genre as G
from prunekit.masks import current_mask
from prunekit.training.movement import MovementPruner
from prunekit.training.pruner import Pruner


def encoder_sparsity(model) -> float:
    """Fraction of zeros in the effective weights of the encoder Linear layers."""
    modules = dict(model.named_modules())
    zeros = total = 0
    for name in G.encoder_linears(model):
        keep = current_mask(modules[name])
        w = modules[name].weight
        zeros += int((w == 0).sum()) if keep is None else int((~keep).sum())
        total += w.numel()
    return zeros / total


def run(method: str, sparsity: float | None, data: G.GenreData, args) -> dict:
    model = G.dense_classifier()
    if args.freeze_embeddings:  # not pruned; freezing them saves a dense 30522x384 gradient and its AdamW update
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    common = {"targets": G.ENCODER_TARGETS, "protect_first": False}
    schedule = {"kind": "cubic", "begin": args.warmup}
    start = time.perf_counter()
    if method == "gmp":
        pruner = Pruner(model, {"sparsity": sparsity, "schedule": schedule, **common}, total_steps=args.steps)
        pruner.prepare()
        G.train(model, data, args.steps, args.lr, batch_size=args.batch_size, on_step=pruner.step,
                on_optimizer=pruner.attach_optimizer, progress=f"gmp {sparsity}")
        pruner.finalize()
    else:
        cfg = {"mode": method, "schedule": schedule, "score_init": args.score_init, **common}
        if method == "hard":
            cfg["sparsity"] = sparsity
        else:
            cfg.update(regularization=args.soft_lambda, threshold=args.soft_threshold)
        pruner = MovementPruner(model, cfg, total_steps=args.steps).prepare()
        groups = pruner.param_groups(args.lr, args.score_lr, weight_decay=0.01)
        G.train(model, data, args.steps, args.lr, batch_size=args.batch_size, param_groups=groups,
                extra_loss=pruner.regularisation_loss, on_step=pruner.step, progress=f"movement {method} {sparsity}")
        pruner.finalize()
    seconds = time.perf_counter() - start
    label = ("magnitude (gmp)" if method == "gmp"
             else f"movement ({method}, {args.score_init} init, score lr {args.score_lr:g})")
    return {"method": label, "target": sparsity,
            "achieved": encoder_sparsity(model), "test_acc": G.evaluate(model, data, "test"), "steps": args.steps,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--sparsities", default="0.9,0.97")
    parser.add_argument("--methods", default="hard,gmp", help="comma-separated: hard, soft, gmp")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--score-lr", type=float, default=1e-2)
    parser.add_argument("--score-init", default="constant", choices=["constant", "magnitude"],
                        help="movement scores start at 0 (Sanh et al.) or at |W| (the first mask is magnitude's)")
    parser.add_argument("--warmup", type=int, default=10, help="steps before the sparsity starts rising")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--soft-lambda", type=float, default=1e-4)
    parser.add_argument("--soft-threshold", type=float, default=-0.1)
    parser.add_argument("--train-embeddings", dest="freeze_embeddings", action="store_false",
                        help="also train the word embeddings (default: frozen in the pruned runs)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = G.load_genre()
    t0 = time.perf_counter()
    dense = G.dense_classifier(data)
    rows = [{"method": "dense (fine-tuned)", "target": 0.0, "achieved": encoder_sparsity(dense),
             "test_acc": G.evaluate(dense, data, "test"), "steps": G.DENSE_STEPS, "seconds": None}]
    del dense
    methods = args.methods.split(",")
    for sparsity in (float(s) for s in args.sparsities.split(",")):
        for method in (m for m in methods if m != "soft"):
            rows.append(run(method, sparsity, data, args))
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    if "soft" in methods:
        rows.append(run("soft", None, data, args))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"\n{data.describe()}; {args.steps} steps, batch {args.batch_size}, lr {args.lr:g}, score lr "
          f"{args.score_lr:g}, warm-up {args.warmup}; total {time.perf_counter() - t0:.0f}s\n")
    print("| method | target sparsity | achieved (encoder Linear) | test accuracy | steps | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        target = "-" if r["target"] is None else f"{100 * r['target']:.0f}%"
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.0f}"
        print(f"| {r['method']} | {target} | {100 * r['achieved']:.1f}% | {100 * r['test_acc']:.1f}% | {r['steps']} "
              f"| {secs} |")


if __name__ == "__main__":
    main()
