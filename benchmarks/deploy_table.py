"""Benchmark: the deployment table (issue 6) made real: size, latency, memory and task metric of pruning and
quantization variants of the real MiniLM (all-MiniLM-L6-v2, seq 128) and the digits CNN, measured side by side.

Variants (no fine-tuning anywhere; every pruning is one-shot from the pretrained weights):
- fp32 dense: the pretrained model; file = `safetensors.torch.save_model`.
- 50% unstructured: magnitude, scope layer, default protections (first executed layer and output head dense),
  `finalize`d; stored dense (safetensors), dense kernels.
- 50% + sparsify: the same model after `prunekit.runtime.sparsify` at the bench inputs (CSR / BSR 4x4 where the
  timing at the layer's shape beats dense by >= 5%, reverted if slower end to end); file = the same safetensors.
- INT8 dynamic: `quantize_dynamic_int8` (torch.ao, per-channel, Linear only); file = bench's safetensors of the
  unpacked INT8 state dict.
- 50% + INT8: `save_compressed(values="int8")` of the 50% model (the real file), `load_compressed` into a fresh
  model (dequantized fp32 weights), then `quantize_dynamic_int8` for the latency (the INT8 kernels; the stored
  codes are re-quantized per channel by torch.ao, so the metric is of that model).
- 70% + INT4: `save_compressed(values="int4", group_size=32 for MiniLM, per channel for digits)`, loaded with
  `quant_linear=True` (Linear layers become `prunekit.quant.QuantLinear`, dequantizing in forward; convs fp32).
- structured: one `structured` stage to `macs_ratio: 0.5`, importance activation, compensate least_squares,
  calibration data (MiniLM: 32 packed 128-token train windows, hf_config on, so only the FFN width shrinks;
  digits: 8 train batches of 64); file = safetensors of the smaller model.
- structured + INT8: `quantize_dynamic_int8` of the structured model.

Timing: `prunekit.eval.bench` (1 pinned thread, every variant warmed up, then interleaved rotated rounds).
Metrics: MiniLM: mean cosine of mean-pooled embeddings vs dense on 128 held-out Shakespeare test lines; genre
accuracy of a logistic-regression probe fitted once on dense embeddings of 2400 shakespeare-genre train passages and
applied to each variant's embeddings of 768 test passages (the variant replaces the encoder under a fixed head).
Digits: test accuracy.

Run:  python benchmarks/deploy_table.py [--models minilm,digits] [--minilm-batches 1 8] [--runs 20]
      [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import prunekit
from prunekit.api import stage
from prunekit.eval.bench import BenchResult, Variant, bench
from prunekit.export.quantize_dynamic import quantize_dynamic_int8
from prunekit.export.storage import load_compressed, save_compressed
from prunekit.runtime import sparsify

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def save_st(model: nn.Module, path: str) -> str:
    from safetensors.torch import save_model

    save_model(model, path)
    return path


def unstructured(model: nn.Module, x: Any, sparsity: float) -> nn.Module:
    m = copy.deepcopy(model)
    prunekit.prune(m, {"stages": [{"method": "magnitude", "pattern": "unstructured", "scope": "layer",
                                   "sparsity": sparsity}]}, x)
    return prunekit.finalize(m)


def build_variants(dense: nn.Module, x: Any, fresh: Callable[[], nn.Module], calib: Any, tmp: str,
                   int4_group: int | None, struct_opts: dict[str, Any], log: list[str]) -> dict[str, Variant]:
    """Every variant with its real file; `log` collects notes (sparsify choices, structured notes)."""
    v: dict[str, Variant] = {"fp32 dense": Variant(dense, [save_st(dense, f"{tmp}/dense.safetensors")])}
    p50 = unstructured(dense, x, 0.5)
    f50 = save_st(p50, f"{tmp}/p50.safetensors")
    v["50% unstructured (dense storage)"] = Variant(p50, [f50])
    v["50% + sparsify"] = Variant(copy.deepcopy(p50), [f50])  # sparsified per batch in run_batches
    v["INT8 dynamic"] = Variant(quantize_dynamic_int8(dense))
    c8 = f"{tmp}/p50_int8.pkc.safetensors"
    save_compressed(p50, c8, values="int8")
    v["50% + INT8 (file int8, run dyn. INT8)"] = Variant(quantize_dynamic_int8(load_compressed(c8, fresh())), [c8])
    p70 = unstructured(dense, x, 0.7)
    c4 = f"{tmp}/p70_int4.pkc.safetensors"
    save_compressed(p70, c4, values="int4", group_size=int4_group)
    v["70% + INT4 (QuantLinear)"] = Variant(load_compressed(c4, fresh(), quant_linear=True), [c4])
    st = copy.deepcopy(dense)
    t0 = time.perf_counter()
    report = prunekit.prune(st, stage("structured", target={"macs_ratio": 0.5}, importance="activation",
                                      compensate="least_squares", **struct_opts), x, data=calib)
    log.append(f"structured pruning took {time.perf_counter() - t0:.1f} s; notes: "
               + " | ".join(report.stages[-1].get("notes", [])))
    from prunekit.masks import has_masks

    st = prunekit.finalize(st) if has_masks(st) else st
    v["structured 0.5x MACs"] = Variant(st, [save_st(st, f"{tmp}/struct.safetensors")])
    v["structured + INT8 dynamic"] = Variant(quantize_dynamic_int8(st))
    return v


def sparsified(variant: Variant, x: Any, log: list[str], label: str) -> Variant:
    model = copy.deepcopy(variant.model)
    t0 = time.perf_counter()
    rep = sparsify(model, x, kinds=("dense", "csr", "bsr"), bsr_sizes=(4,), threads=1)
    sw = [f"{c.name} ({c.choice}, {c.speedup:.2f}x)" for c in rep.layers if c.choice != "dense"]
    timed = sum(1 for c in rep.layers if c.timings_ms)
    end = "" if rep.model_speedup is None else f"; whole model {rep.model_speedup:.2f}x"
    log.append(f"{label}: sparsify ({time.perf_counter() - t0:.0f} s) timed {timed}/{len(rep.layers)} layers, "
               f"chose sparse for {len(sw)}: {', '.join(sw) or 'none'}{end}; "
               f"{'all reverted to dense' if rep.reverted else f'{len(rep.swapped)} kept sparse'}"
               + ("; " + "; ".join(rep.messages) if rep.messages else ""))
    return Variant(model, variant.files)


def run_batches(model_name: str, variants: dict[str, Variant], inputs: dict[int, Any],
                metrics: Callable[[nn.Module], dict[str, float]], runs: int, log: list[str]) -> list[BenchResult]:
    cache: dict[int, dict[str, float]] = {}
    for name, var in variants.items():  # metrics once per variant (sparsify does not change outputs beyond fp noise)
        t0 = time.perf_counter()
        cache[id(var.model)] = metrics(var.model)
        log.append(f"{model_name} metric {name}: {cache[id(var.model)]} ({time.perf_counter() - t0:.0f} s)")
        print(log[-1], flush=True)
    spar_key = "50% + sparsify"
    out = []
    for batch, x in inputs.items():
        vs = dict(variants)
        vs[spar_key] = sparsified(variants[spar_key], x, log, f"{model_name} batch {batch}")
        print(log[-1], flush=True)
        cache[id(vs[spar_key].model)] = cache[id(variants[spar_key].model)]
        t0 = time.perf_counter()
        res = bench(vs, x, evaluate=lambda m: cache[id(m)], threads=1, warmup=3, runs=max(5, int(runs / batch ** 0.5)),
                    rounds=5)
        log.append(f"{model_name} batch {batch}: bench took {time.perf_counter() - t0:.0f} s")
        print(log[-1], flush=True)
        out.append(res)
    return out


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:,.2f} MiB"


def table(title: str, res: BenchResult) -> str:
    base = res.variant(res.baseline)
    names = sorted({k for v in res.variants for k in v.metrics})
    lines = [f"**{title}** ({res.inputs}, {res.threads} thread, {res.runs} timed calls per variant in "
             f"{res.rounds} interleaved rounds, torch {res.torch_version})", "",
             "| variant | file bytes | file ratio | p50 ms | p50 ratio (variant / dense) | speedup | "
             "peak act. mem | weight mem | " + " | ".join(names) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(names)]
    for v in res.variants:
        ratio = v.latency_p50_ms / base.latency_p50_ms
        lines.append(f"| {v.name} | {v.file_bytes:,} | {v.file_bytes / base.file_bytes:.3f} | "
                     f"{v.latency_p50_ms:.2f} | {ratio:.2f} | {1 / ratio:.2f}x | {kib(v.peak_memory_bytes)} | "
                     f"{kib(v.weight_bytes)} | "
                     + " | ".join(f"{v.metrics.get(k, float('nan')):.4f}" for k in names) + " |")
    return "\n".join(lines)


def minilm(args: argparse.Namespace, tmp: str, log: list[str]) -> list[tuple[str, BenchResult]]:
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    from prunekit.data import load_dataset, mean_pool, minilm_path
    from structured_latency import calibration, minilm as load_minilm, spoken_lines, windows

    dense, tok = load_minilm()
    path = minilm_path()
    fresh = lambda: AutoModel.from_pretrained(path).eval()  # noqa: E731
    test = spoken_lines("test")
    held = test[:: max(1, len(test) // 128)][:128]
    genre = load_dataset("shakespeare-genre")
    g_train = [genre.train[i] for i in range(0, len(genre.train), len(genre.train) // 2400)][:2400]
    g_test = [genre.test[i] for i in range(0, len(genre.test), len(genre.test) // 768)][:768]

    def embed(m: nn.Module, texts: list[str]) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        out = torch.empty(len(texts), 384)
        with torch.inference_mode():
            for s in range(0, len(order), 32):
                idx = order[s:s + 32]
                enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
                out[idx] = mean_pool(m.eval()(**enc).last_hidden_state, enc["attention_mask"]).float()
        return out

    t0 = time.perf_counter()
    ref = embed(dense, held)
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(embed(dense, [t for t, _ in g_train]).numpy(),
                                                          [y for _, y in g_train])
    log.append(f"genre probe fitted on {len(g_train)} dense train embeddings in {time.perf_counter() - t0:.0f} s")
    y_test = [y for _, y in g_test]

    def metrics(m: nn.Module) -> dict[str, float]:
        cos = torch.nn.functional.cosine_similarity(embed(m, held), ref, dim=-1).mean()
        acc = probe.score(embed(m, [t for t, _ in g_test]).numpy(), y_test)
        return {"cosine vs dense": float(cos), "genre acc (probe)": float(acc)}

    one = windows(tok, "train", 1)
    x1 = {"input_ids": one, "attention_mask": torch.ones_like(one)}
    calib = calibration(tok, "windows", 32)
    variants = build_variants(dense, x1, fresh, calib, tmp, 32, {}, log)
    print("\n".join(log), flush=True)
    inputs = {b: {k: v.expand(b, -1).contiguous() for k, v in x1.items()} for b in args.minilm_batches}
    results = run_batches("MiniLM", variants, inputs, metrics, args.runs, log)
    return [(f"MiniLM, batch {b} x seq 128", r) for b, r in zip(inputs, results)]


def digits(args: argparse.Namespace, tmp: str, log: list[str]) -> list[tuple[str, BenchResult]]:
    from prunekit.data import digits_cnn, evaluate_classifier, load_dataset

    splits = load_dataset("digits")
    dense = digits_cnn(pretrained=True, progress=False).eval()
    xs = splits.train.tensors[0]
    calib = [xs[i:i + 64] for i in range(0, 512, 64)]
    x = splits.test.tensors[0][:32]
    variants = build_variants(dense, x, lambda: digits_cnn(pretrained=True, progress=False).eval(), calib, tmp,
                              None, {}, log)
    results = run_batches("digits", variants, {32: x},
                          lambda m: {"test accuracy": evaluate_classifier(m, splits.test)}, args.runs * 5, log)
    return [("digits CNN, batch 32 (1x8x8)", results[0])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,digits", help="comma-separated: minilm, digits")
    ap.add_argument("--minilm-batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--runs", type=int, default=20, help="timed calls per variant at batch 1 (/ sqrt(batch))")
    ap.add_argument("--json", default=None, help="also write every BenchResult as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    log: list[str] = []
    tables: list[tuple[str, BenchResult]] = []
    with tempfile.TemporaryDirectory(prefix="pk-deploy-") as tmp:
        for name in args.models.split(","):
            tables += {"minilm": minilm, "digits": digits}[name.strip()](args, tmp, log)
    print("\n## notes\n" + "\n".join(f"- {line}" for line in log))
    for title, res in tables:
        print("\n" + table(title, res))
    print(f"\nrun took {time.perf_counter() - start:.0f} s; load average {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({t: r.to_dict() for t, r in tables}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
