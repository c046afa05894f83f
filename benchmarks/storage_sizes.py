"""Benchmark: file size of compressed storage (bitmask / packed N:M, fp32 / fp16 / INT8 / INT4 values) vs the fp32
dense safetensors file, on the real MiniLM (all-MiniLM-L6-v2) and the digits CNN, with the task metric after loading.

Variants: dense fp32 (the baseline file, `safetensors.torch.save_model`); 50% unstructured magnitude pruning
(`prunekit.prune`, scope layer, default protections: first executed layer and output head stay dense; then
`finalize`) stored dense, as bitmask fp32 / fp16 / INT8; 2:4 magnitude stored packed fp16 / INT8; 70% + INT4; INT8
of the unpruned model. Every compressed file uses `save_compressed` (per tensor the smallest of dense / bitmask /
N:M), is loaded back with `load_compressed` into a fresh model, and the metric is measured on the loaded model:
MiniLM: mean cosine of mean-pooled embeddings of 64 Shakespeare test lines vs the dense model; digits: test accuracy.
theoretical = exact payload bits / 8 (`describe`), measured = bytes on disk (header included).

Run:  python benchmarks/storage_sizes.py [--models minilm,digits] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit import finalize, prune
from prunekit.export.storage import describe, load_compressed, save_compressed


def _fp32_dense_file(model: nn.Module, path: str) -> int:
    from safetensors.torch import save_model

    save_model(model, path)
    return os.path.getsize(path)


def _pruned(model: nn.Module, x: Any, sparsity: float | None, pattern: str = "unstructured") -> nn.Module:
    m = copy.deepcopy(model)
    stage: dict[str, Any] = {"method": "magnitude", "pattern": pattern, "scope": "layer"}
    if sparsity is not None:
        stage["sparsity"] = sparsity
    prune(m, {"stages": [stage]}, x)
    return finalize(m)


def run_model(name: str, model: nn.Module, x: Any, fresh: Callable[[], nn.Module],
              metric: Callable[[nn.Module], float], group_size_int4: int | None) -> list[dict[str, Any]]:
    """All variants of one model; returns one row per variant."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pk-storage-") as tmp:
        base = _fp32_dense_file(model, os.path.join(tmp, "dense.safetensors"))
        rows.append({"model": name, "variant": "dense fp32 (baseline file)", "bytes": base, "theoretical": None,
                     "metric": metric(model)})
        p50 = _pruned(model, x, 0.5)
        size = _fp32_dense_file(p50, os.path.join(tmp, "p50.safetensors"))
        rows.append({"model": name, "variant": "50% unstructured, stored dense", "bytes": size, "theoretical": None,
                     "metric": metric(p50)})
        p24 = _pruned(model, x, None, "2:4")
        p70 = _pruned(model, x, 0.7)
        plan = [("50% bitmask fp32", p50, "fp32", None), ("50% bitmask fp16", p50, "fp16", None),
                ("50% bitmask INT8", p50, "int8", None), ("2:4 packed fp16", p24, "fp16", None),
                ("2:4 packed INT8", p24, "int8", None), (f"70% + INT4 (group {group_size_int4})", p70, "int4",
                                                         group_size_int4),
                ("INT8 dense (no pruning)", model, "int8", None)]
        for label, m, values, gs in plan:
            path = os.path.join(tmp, f"{len(rows)}.safetensors")
            t0 = time.perf_counter()
            save_compressed(m, path, values=values, group_size=gs)
            t_save = time.perf_counter() - t0
            desc = describe(path)
            t0 = time.perf_counter()
            loaded = load_compressed(path, fresh())
            t_load = time.perf_counter() - t0
            forms: dict[str, int] = {}
            sparse_stored = sparse_fp32 = 0
            for r in desc.rows:
                forms[r.encoding] = forms.get(r.encoding, 0) + 1
                if r.encoding == "bitmask" or ":" in r.encoding:
                    sparse_stored += r.stored_bytes
                    sparse_fp32 += 4 * math.prod(r.shape)
            rows.append({"model": name, "variant": label, "bytes": desc.file_bytes,
                         "theoretical": desc.theoretical_bytes, "metric": metric(loaded),
                         "metric_in_memory": metric(m), "save_s": t_save, "load_s": t_load, "forms": forms,
                         "sparse_tensors_ratio": sparse_stored / sparse_fp32 if sparse_fp32 else None})
            print(f"  {label}: {desc.file_bytes:,} B ({desc.file_bytes / base:.3f}), forms {forms}", flush=True)
    for r in rows:
        r["ratio"] = r["bytes"] / base
        r["theoretical_ratio"] = None if r["theoretical"] is None else r["theoretical"] / base
    return rows


def minilm_rows() -> list[dict[str, Any]]:
    from transformers import AutoModel, AutoTokenizer

    from prunekit.data import load_dataset, mean_pool, minilm_path

    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    dense = AutoModel.from_pretrained(path).eval()
    text = load_dataset("shakespeare").test.text
    lines = [ln.strip() for ln in text.splitlines()
             if len(ln.strip()) >= 20 and not ln.strip().endswith(":") and not ln.isupper()]
    lines = lines[:: max(1, len(lines) // 64)][:64]
    enc = tok(lines, padding=True, truncation=True, max_length=128, return_tensors="pt")

    def embed(m: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return mean_pool(m.eval()(**enc).last_hidden_state, enc["attention_mask"])

    ref = embed(dense)

    def cosine(m: nn.Module) -> float:
        return float(torch.nn.functional.cosine_similarity(embed(m), ref, dim=-1).mean())

    x = dict(tok(lines[:4], padding=True, return_tensors="pt"))
    return run_model("MiniLM", dense, x, lambda: AutoModel.from_pretrained(path).eval(), cosine, 32)


def digits_rows() -> list[dict[str, Any]]:
    from prunekit.data import digits_cnn, evaluate_classifier, load_dataset

    splits = load_dataset("digits")
    dense = digits_cnn(pretrained=True, progress=False).eval()
    x = splits.test.tensors[0][:8]
    return run_model("digits CNN", dense, x, lambda: digits_cnn(pretrained=True, progress=False).eval(),
                     lambda m: evaluate_classifier(m, splits.test), None)


def table(rows: list[dict[str, Any]], metric_names: dict[str, str]) -> str:
    lines = ["| model | variant | file bytes | vs fp32 dense | theoretical bytes | theoretical ratio | "
             "sparse-stored tensors vs their fp32 | metric after load | pruned fp32 in memory | save / load s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        th = "" if r["theoretical"] is None else f"{r['theoretical']:,.0f}"
        thr = "" if r["theoretical_ratio"] is None else f"{r['theoretical_ratio']:.3f}"
        mem = r.get("metric_in_memory", r["metric"])
        sp = "" if r.get("sparse_tensors_ratio") is None else f"{r['sparse_tensors_ratio']:.3f}"
        times = f"{r['save_s']:.2f} / {r['load_s']:.2f}" if "save_s" in r else ""
        lines.append(f"| {r['model']} | {r['variant']} | {r['bytes']:,} | {r['ratio']:.3f} | {th} | {thr} | {sp} | "
                     f"{metric_names[r['model']]} {r['metric']:.4f} | {mem:.4f} | {times} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,digits", help="comma-separated: minilm, digits")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        print(f"{name}:", flush=True)
        rows += {"minilm": minilm_rows, "digits": digits_rows}[name.strip()]()
    print(table(rows, {"MiniLM": "cosine", "digits CNN": "accuracy"}))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
