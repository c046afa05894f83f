"""Benchmark: the measured latency model (prunekit.graph.latency) on resnet18 — build time, prediction error, and
selection to a latency target vs a MACs target.

1. Build time of the latency model without a cache (every op timed on this device) and with it (no timing).
2. Prediction error: for `--samples` random keep vectors (every group keeps a random fraction in [0.3, 1] of its
   channels, the L1-best ones), the model is physically pruned (graph surgery on a copy) and timed; the table
   gives predicted vs measured latency and the error in %.
3. Selection: the same L1 scores and `select()` as the `structured` method (scope layer), once with cost = MACs
   ratio 0.5 and once with cost = predicted latency ratio 0.5; both pruned models are timed.

All timings: `perf_timer` (minimum of repeated calls after warm-up), batch 1, `--threads` torch threads (default 1), on the CPU.
Latency on a shared machine is noisy: the measured columns are medians of `--rounds` alternating rounds.

Run:  python benchmarks/latency_target.py --size 112 --samples 8
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

from prunekit.graph import DependencyGraph, get_tensor, remove_slices
from prunekit.graph.latency import latency_model, perf_timer
from prunekit.methods.structured.importance import all_scores
from prunekit.methods.structured.select import candidate, layer_masks, select


def _pruned(model, graph, keep):
    out = copy.deepcopy(model)
    remove_slices(out, graph.removals(keep))
    return out


def _time(models, x, rounds):
    res = [[] for _ in models]
    for _ in range(rounds):
        for i, m in enumerate(models):
            res[i].append(perf_timer(lambda m=m: m(x), min_time=0.5, max_reps=200))
    return [statistics.median(r) for r in res]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", help="timm model name (random init)")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import timm

    model = timm.create_model(args.model, pretrained=False).eval()
    x = torch.randn(1, 3, args.size, args.size)
    graph = DependencyGraph.build(model, x)
    cache = tempfile.mkdtemp()
    t0 = time.perf_counter()
    lat = latency_model(graph, model, x, cache_dir=cache, progress=False)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    lat2 = latency_model(graph, model, x, cache_dir=cache, progress=False)
    warm = time.perf_counter() - t0
    print(f"## {args.model}, {args.size} px, batch 1, {args.threads} thread(s)\n")
    print(f"build: {cold:.1f} s without cache ({lat.measured} timings), {warm:.2f} s with it ({lat2.measured} timings)")
    print(f"dense: predicted {lat.dense_latency * 1e3:.2f} ms (ops {sum(o['seconds'] or 0 for o in lat.ops) * 1e3:.2f} ms"
          f" + remainder {lat.fixed * 1e3:.2f} ms fixed + {lat.per_activation * 1e3:.2f} ms x kept activations)\n")

    with torch.no_grad():
        groups = graph.groups
        norm_w = frozenset(f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
        scores = all_scores(groups, lambda n: get_tensor(model, n), "l1", norm_weights=norm_w)
        chosen = [g for g in groups if g.id in scores]
        frozen = [torch.tensor([u in g.frozen for u in range(g.size)], dtype=torch.bool) for g in chosen]
        cands = [candidate(scores[g.id], f) for g, f in zip(chosen, frozen)]
        cm = graph.cost_model()

        def keep_of(masks):
            return {g.id: m for g, m in zip(chosen, masks)}

        def vec(masks):
            return graph.keep_vector(keep_of(masks))

        print("| sample | MACs ratio | predicted ms | measured ms | error % |\n|---|---|---|---|---|")
        keeps, models = [], []
        gen = torch.Generator().manual_seed(args.seed)
        for _ in range(args.samples):
            masks = [layer_masks([c], float(0.3 + 0.7 * torch.rand((), generator=gen)), 1, 1)[0] for c in cands]
            keeps.append(masks)
            models.append(_pruned(model, graph, keep_of(masks)))
        measured = _time([model, *models], x, args.rounds)
        errs = []
        for i, (masks, ms) in enumerate(zip([None, *keeps], measured)):
            v = vec(masks) if masks is not None else torch.ones(cm.n_units, dtype=torch.bool)
            pred = lat.latency(v)
            errs.append(abs(pred - ms) / ms * 100)
            print(f"| {'dense' if i == 0 else i} | {cm.macs(v) / cm.dense_macs:.3f} | {pred * 1e3:.2f} | {ms * 1e3:.2f} "
                  f"| {(pred - ms) / ms * 100:+.1f} |")
        print(f"\nmean |error| {statistics.mean(errs):.1f} %, max {max(errs):.1f} %\n")

        results = {}
        for kind in ("macs_ratio", "latency_ratio"):
            if kind == "macs_ratio":
                def cost(masks):
                    return cm.macs(vec(masks)) / cm.dense_macs
            else:
                def cost(masks):
                    return lat.latency(vec(masks)) / lat.dense_latency
            masks, reached = select(cands, cost, 0.5, scope="layer")
            results[kind] = (masks, reached)
        pruned = [_pruned(model, graph, keep_of(results[k][0])) for k in results]
        dense_ms, *ms = _time([model, *pruned], x, args.rounds)
        print("| target 0.5 | MACs ratio | predicted latency ratio | measured latency ratio | measured ms |\n"
              "|---|---|---|---|---|")
        for (kind, (masks, _)), m in zip(results.items(), ms):
            v = vec(masks)
            print(f"| {kind} | {cm.macs(v) / cm.dense_macs:.3f} | {lat.latency(v) / lat.dense_latency:.3f} | "
                  f"{m / dense_ms:.3f} | {m * 1e3:.2f} (dense {dense_ms * 1e3:.2f}) |")


if __name__ == "__main__":
    main()
