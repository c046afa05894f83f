"""Taylor head pruning of MiniLM (6 layers x 12 heads) on the Shakespeare genre task, vs random / l1 head choice.

    python benchmarks/minilm_head_taylor.py [--remove 4,6] [--steps 2] [--ft-steps 30] [--score-batches 8]
                                            [--baselines random,l1] [--val 600] [--latency-iters 30]
                                            [--oneshot] [--control]

The numbers in /tmp/pk/h2-bench.md (for docs/benchmarks.md) came from
    python benchmarks/minilm_head_taylor.py --baselines random,l1 --ft-steps 20 --score-batches 4 --oneshot --control
(`--oneshot`: each choice also without fine-tune; `--control`: the dense model fine-tuned the same extra steps).

Setup (benchmarks/_minilm_genre.py): shakespeare-genre, 3,000 train / 600 val / 900 test passages tokenized by
MiniLM's tokenizer to 64 tokens; the fine-tuned dense BertForSequenceClassification cached under
~/.cache/prunekit/bench/minilm_genre_dense (trained once if absent). Each row starts from that dense model and runs
the `head_taylor` stage, uniform: every layer loses the same number of heads (`--remove` per layer: 4 of 12 = 33%,
6 of 12 = 50%), in `--steps` steps; each step scores the heads on `--score-batches` train batches of 32, removes an
equal share physically (graph surgery, checked against zeroing the heads), then fine-tunes `--ft-steps` AdamW steps
(batch 32, lr 5e-5 linearly decayed). The same budget with random / l1-norm head choice is the baseline. Test
accuracy is read once per row, at the end (decisions never see it). Latency: CPU, 1 thread, seq 64, batch 1 and 8,
p50 of `--latency-iters` forwards, dense and pruned alternated for 3 rounds (best p50 kept; prunekit.eval
compare_models). The machine may be shared: latency ratios measured in the same run are the number to read.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _minilm_genre import dense_classifier, evaluate, load_genre, train  # noqa: E402

from prunekit.api import stage  # noqa: E402
from prunekit.eval.compare import compare_models  # noqa: E402
from prunekit.methods.base import PruneContext  # noqa: E402
from prunekit.methods.head_taylor.method import HeadTaylorMethod  # noqa: E402

HEADS = 12


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _heads(model: torch.nn.Module) -> list[int]:
    return [layer.attention.self.query.out_features // 32 for layer in model.bert.encoder.layer]


def _latency(dense, pruned, data, iters: int) -> dict[int, tuple[float, float]]:
    out = {}
    for batch in (1, 8):
        x = {"input_ids": data.test.input_ids[:batch], "attention_mask": data.test.attention_mask[:batch]}
        pair = compare_models(dense, pruned, x, peak_memory=False, size=False, iters=iters, rounds=3, threads=1)[0]
        out[batch] = (pair.before, pair.after)
    return out


def _val(model: torch.nn.Module, data, n: int) -> float:
    """Accuracy on the first `n` val passages (the same ones the stage's notes use)."""
    part = data.val
    sub = SimpleNamespace(val=type(part)(part.input_ids[:n], part.attention_mask[:n], part.labels[:n]))
    sub.split = lambda name: sub.val
    return evaluate(model, sub, "val")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--remove", default="4,6", help="heads removed per layer (of 12), comma separated")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--ft-steps", type=int, default=30, help="fine-tune steps after each pruning step")
    ap.add_argument("--score-batches", type=int, default=8)
    ap.add_argument("--baselines", default="random", help="comma separated: random, l1 (empty: none)")
    ap.add_argument("--val", type=int, default=600, help="val passages evaluated after each step (notes only)")
    ap.add_argument("--oneshot", action="store_true", help="also each choice without any fine-tune")
    ap.add_argument("--control", action="store_true",
                    help="also the dense model fine-tuned for the same extra steps (steps x ft-steps)")
    ap.add_argument("--latency-iters", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_genre()
    dense = dense_classifier(data).eval()
    dense_acc = evaluate(dense, data, "test")
    n_val = min(args.val, len(data.val))
    dense_val = _val(dense, data, n_val)
    print(f"dense: test accuracy {dense_acc:.4f}, val {dense_val:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    tr, va = data.train, data.val
    splits = SimpleNamespace(train=TensorDataset(tr.input_ids, tr.attention_mask, tr.labels),
                             val=TensorDataset(va.input_ids[:args.val], va.attention_mask[:args.val],
                                               va.labels[:args.val]))
    epochs = args.ft_steps * 32 / len(tr)
    kinds = ["taylor"] + [k for k in args.baselines.split(",") if k]
    rows, latency, extra = [], {}, []
    if args.control:
        model = copy.deepcopy(dense)
        train(model, data, steps=args.steps * args.ft_steps, lr=5e-5, seed=1)
        extra.append((f"dense + {args.steps * args.ft_steps} fine-tune steps (control)", evaluate(model, data, "test"),
                      _val(model, data, n_val)))
        print(extra[-1], flush=True)
    settings = [(kind, epochs) for kind in kinds] + ([(kind, 0.0) for kind in kinds] if args.oneshot else [])
    for k in (int(v) for v in args.remove.split(",")):
        for kind, ep in settings:
            model = copy.deepcopy(dense)
            cfg = stage("head_taylor", heads_ratio=k / HEADS, steps=args.steps, importance=kind, epochs=ep,
                        lr=5e-5, batch_size=32, score_batches=args.score_batches).config
            if ep == 0:
                kind = f"{kind}, no fine-tune"
            start = time.perf_counter()
            result = HeadTaylorMethod().apply(model, cfg, PruneContext(data=splits))
            took = time.perf_counter() - start
            acc = evaluate(model, data, "test")
            vals = [n.split("val accuracy ")[1] for n in result.notes if "val accuracy" in n]
            rows.append((k, kind, acc, _heads(model), _params(model), took, vals))
            print(f"remove {k}/layer {kind}: test {acc:.4f}, val per step {vals}, {took:.0f}s", flush=True)
            if kind == "taylor" and ep > 0:
                latency[k] = _latency(dense, model, data, args.latency_iters)
                print(f"  latency {latency[k]}", flush=True)
    n_dense = _params(dense)
    print(f"\n{data.describe()}; {args.steps} step(s), {args.ft_steps} fine-tune steps of 32 after each, "
          f"{args.score_batches} scoring batches of 32 per step\n")
    print("| heads removed / layer | choice | heads kept | test acc | params | val acc per step | time |")
    print("|---|---|---|---|---|---|---|")
    print(f"| 0 (dense) | - | {6 * HEADS} | {dense_acc:.4f} | {n_dense / 1e6:.2f}M | {dense_val:.4f} | - |")
    for label, acc, val in extra:
        print(f"| 0 | {label} | {6 * HEADS} | {acc:.4f} | {n_dense / 1e6:.2f}M | {val:.4f} | - |")
    for k, kind, acc, heads, n, took, vals in rows:
        print(f"| {k} ({k / HEADS:.0%}) | {kind} | {sum(heads)} | {acc:.4f} | {n / 1e6:.2f}M "
              f"({n / n_dense:.1%}) | {', '.join(vals)} | {took:.0f}s |")
    print("\n| heads removed / layer | batch | dense p50 ms | pruned p50 ms | speed-up |")
    print("|---|---|---|---|---|")
    for k, per_batch in latency.items():
        for batch, (before, after) in per_batch.items():
            print(f"| {k} | {batch} | {before:.1f} | {after:.1f} | {before / after:.2f}x |")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
