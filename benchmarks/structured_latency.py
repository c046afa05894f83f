"""Benchmark: does structured pruning's MACs reduction turn into CPU latency? And how close stays MiniLM?

Models (each pruned by one `structured` stage to `macs_ratio: 0.5`, layer scope, l1 importance unless told):
- resnet18: torchvision, random init, `--px` pixels (channels of every conv group);
- vit_s: a ViT-Small-shaped Hugging Face `ViTModel` (12 layers, hidden 384, 6 heads, MLP 1536, 224 px, random
  init), `hf_config: false` so whole attention heads and MLP width go;
- minilm: the real all-MiniLM-L6-v2 (`prunekit.data.minilm_path()`), seq 128, pruned twice: `hf_config` on (what
  its config can express: FFN width; `save_pretrained` + `from_pretrained` works) and `hf_config: false` (whole
  heads + FFN per layer, in memory only). Inputs are windows of 128 tokens packed from lines of the Shakespeare
  train plays: one window is the example input (graph, MACs target, latency); the calibration `data=` of
  `prunekit.prune` (read by data-driven importances and by `compensate`) is 32 such windows in batches of 4, or with
  `--calib-format lines` 128 single train lines, padded, in batches of 16.

Latency: `prunekit.eval.measure_latency` (inference mode, warm-up first), p50 of `--iters` runs per round; dense and
pruned alternate inside each round (order flipped every round), `--rounds` rounds. Speedup = median over rounds of
dense p50 / pruned p50 in the same round; MACs gain = dense MACs / pruned MACs (`prunekit.eval.count_model`, same
inputs); efficiency = speedup / MACs gain (1.0: latency falls exactly as MACs do).

MiniLM fidelity: cosine between dense and pruned sentence embeddings (attention-masked mean pooling) of `--lines`
held-out lines of the Shakespeare test plays (short, padded) and of `--test-windows` packed 128-token test windows,
for each `--compensate` choice (skipped, with the reason, when the
structured config does not accept that field).

Run:  python benchmarks/structured_latency.py [--models resnet18 vit_s minilm] [--batches 1 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.eval import count_model
from prunekit.eval.measure import measure_latency

SEQ = 128


def structured(model: nn.Module, x: Any, data: Any = None, **options: Any) -> list[str]:
    """Prune `model` in place to half the MACs on `x` (calibration batches `data`); return the stage notes."""
    report = prunekit.prune(model, stage("structured", target={"macs_ratio": 0.5}, **options), x, data=data)
    return list(report.stages[-1].get("notes", []))


def build_resnet18(px: int) -> tuple[nn.Module, Any]:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, px, px)


def build_vit_s() -> tuple[nn.Module, Any]:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                    image_size=224, patch_size=16)
    return ViTModel(cfg, add_pooling_layer=False).eval(), torch.randn(1, 3, 224, 224)


def minilm() -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    from prunekit.data import minilm_path

    return AutoModel.from_pretrained(minilm_path()).eval(), AutoTokenizer.from_pretrained(minilm_path())


def spoken_lines(split: str) -> list[str]:
    """Lines of the split's plays that are speech-like (not headings or speaker names), at least 20 characters."""
    from prunekit.data import load_dataset

    text = getattr(load_dataset("shakespeare"), split).text
    return [ln.strip() for ln in text.splitlines()
            if len(ln.strip()) >= 20 and not ln.strip().endswith(":") and not ln.isupper()]


def windows(tokenizer: Any, split: str, rows: int) -> torch.Tensor:
    """`rows` rows of SEQ tokens: [CLS] + the split's lines packed back to back + [SEP], no padding."""
    ids: list[int] = []
    out = []
    for line in spoken_lines(split):
        ids += tokenizer(line, add_special_tokens=False)["input_ids"]
        if len(ids) >= SEQ - 2:
            out.append([tokenizer.cls_token_id, *ids[: SEQ - 2], tokenizer.sep_token_id])
            ids = []
            if len(out) == rows:
                break
    return torch.tensor(out)


def calibration(tokenizer: Any, fmt: str, rows: int) -> list[dict[str, torch.Tensor]]:
    """Calibration batches from the train plays: packed SEQ-token windows (batches of 4) or single padded lines
    (batches of 16, as the held-out lines are fed)."""
    if fmt == "windows":
        ids = windows(tokenizer, "train", rows)
        return [{"input_ids": b, "attention_mask": torch.ones_like(b)} for b in ids.split(4)]
    lines = spoken_lines("train")[:: 7][:rows]
    return [dict(tokenizer(lines[i : i + 16], padding=True, truncation=True, max_length=SEQ, return_tensors="pt"))
            for i in range(0, len(lines), 16)]


def batch_of(x: Any, batch: int) -> Any:
    """The first example repeated to `batch` rows (a Tensor or a dict of Tensors)."""
    if isinstance(x, dict):
        return {k: v[:1].expand(batch, *v.shape[1:]).contiguous() for k, v in x.items()}
    return x[:1].expand(batch, *x.shape[1:]).contiguous()


def speedup(dense: nn.Module, pruned: nn.Module, x: Any, rounds: int, iters: int) -> tuple[float, float, float]:
    """(median dense p50 ms, median pruned p50 ms, median per-round dense / pruned), interleaved rounds."""
    d, p, r = [], [], []
    for i in range(rounds):
        order = (dense, pruned) if i % 2 == 0 else (pruned, dense)
        got = {id(m): measure_latency(m, x, warmup=2, iters=iters).p50_ms for m in order}
        d.append(got[id(dense)])
        p.append(got[id(pruned)])
        r.append(d[-1] / p[-1])
    return statistics.median(d), statistics.median(p), statistics.median(r)


def latency_rows(name: str, dense: nn.Module, pruned: nn.Module, x: Any, args: argparse.Namespace) -> None:
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            xb = batch_of(x, batch)
            gain = count_model(dense, xb).macs / count_model(pruned, xb).macs
            iters = max(2, args.iters // batch) if batch > 1 else args.iters
            d, p, s = speedup(dense, pruned, xb, args.rounds, iters)
            print(f"| {name} | {threads} | {batch} | {d:.2f} | {p:.2f} | {s:.2f}x | {gain:.2f}x | {s / gain:.2f} |",
                  flush=True)
    torch.set_num_threads(1)


def embeddings(model: nn.Module, tokenizer: Any, lines: list[str], packed: torch.Tensor) -> torch.Tensor:
    """Mean-pooled sentence embeddings of `lines` (padded batches of 64), then of the `packed` SEQ-token windows."""
    from prunekit.data import mean_pool

    out = []
    with torch.inference_mode():
        for i in range(0, len(lines), 64):
            enc = tokenizer(lines[i : i + 64], padding=True, truncation=True, max_length=SEQ, return_tensors="pt")
            out.append(mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]))
        mask = torch.ones_like(packed)
        out.append(mean_pool(model(input_ids=packed, attention_mask=mask).last_hidden_state, mask))
    return torch.cat(out)


def run_minilm(args: argparse.Namespace) -> None:
    dense, tok = minilm()
    rows = args.calib or (32 if args.calib_format == "windows" else 128)
    calib = calibration(tok, args.calib_format, rows)
    one = windows(tok, "train", 1)
    x = {"input_ids": one, "attention_mask": torch.ones_like(one)}  # example inputs: graph, MACs target, latency
    test = spoken_lines("test")
    step = max(1, len(test) // args.lines)
    held_out = test[::step][: args.lines]
    packed = windows(tok, "test", args.test_windows)
    ref = embeddings(dense, tok, held_out, packed)
    n = len(held_out)
    fidelity = []
    for mode, options in (("hf_config (FFN)", {}), ("per layer (heads + FFN)", {"hf_config": False})):
        pruned_for_latency = None
        for comp in args.compensate:
            extra = {} if comp == "none" else {"compensate": comp}
            model = copy.deepcopy(dense)
            try:
                start = time.perf_counter()
                notes = structured(model, x, calib, importance=args.importance, round_to=args.round_to,
                                   **options, **extra)
                secs = time.perf_counter() - start
            except PrunekitError as exc:
                fidelity.append(f"| {mode} | {comp} | skipped: {exc} | | | | | |")
                continue
            cos = torch.nn.functional.cosine_similarity(ref, embeddings(model, tok, held_out, packed), dim=-1)
            lines_cos, win_cos = cos[:n], cos[n:]
            macs = count_model(model, x).macs / count_model(dense, x).macs
            fidelity.append(f"| {mode} | {comp} | {macs:.3f} | {lines_cos.mean():.4f} | {lines_cos.min():.4f} | "
                            f"{win_cos.mean():.4f} | {win_cos.min():.4f} | {secs:.1f} |")
            print("# minilm", mode, comp, " | ".join(notes), file=sys.stderr)
            pruned_for_latency = pruned_for_latency or model
        if pruned_for_latency is not None and not args.no_latency:
            latency_rows(f"MiniLM, seq {SEQ}, {mode}", dense, pruned_for_latency, x, args)
    print(f"\nMiniLM embedding fidelity (cosine of mean-pooled embeddings, dense vs pruned): {n} held-out test lines "
          f"and {len(packed)} test windows of {SEQ} packed tokens; calibration: {rows} train "
          f"{args.calib_format} ({len(calib)} batches); importance {args.importance}, round_to {args.round_to}.\n")
    print("| MiniLM mode | compensate | MACs ratio | lines: mean cos | lines: min cos | windows: mean cos | "
          "windows: min cos | prune time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(fidelity))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "vit_s", "minilm"],
                    choices=["resnet18", "vit_s", "minilm"])
    ap.add_argument("--px", type=int, default=224, help="resnet18 input size")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--rounds", type=int, default=11, help="interleaved dense / pruned rounds")
    ap.add_argument("--iters", type=int, default=10, help="timed runs per model per round at batch 1 (/ batch)")
    ap.add_argument("--importance", default="l1", help="structured importance (l1, l2, ... as the config allows)")
    ap.add_argument("--compensate", nargs="+", default=["none", "least_squares"],
                    help="MiniLM: structured `compensate` choices to compare ('none' = field not set)")
    ap.add_argument("--round-to", type=int, default=1, help="structured round_to (channel counts multiple of it)")
    ap.add_argument("--calib-format", default="windows", choices=["windows", "lines"],
                    help="MiniLM calibration rows: packed 128-token train windows (batches of 4) or single padded "
                    "train lines (batches of 16)")
    ap.add_argument("--calib", type=int, default=None, help="MiniLM calibration rows (default: 8 batches' worth)")
    ap.add_argument("--test-windows", type=int, default=32, help="MiniLM: held-out packed test windows")
    ap.add_argument("--no-latency", action="store_true", help="MiniLM: fidelity only")
    ap.add_argument("--lines", type=int, default=256, help="MiniLM: held-out test lines for the fidelity")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(f"torch {torch.__version__}; {args.rounds} interleaved rounds; threads {args.threads}")
    print("| model | threads | batch | dense p50 (ms) | pruned p50 (ms) | speedup | MACs gain | speedup / MACs gain |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        if name == "minilm":
            run_minilm(args)
            continue
        dense, x = build_resnet18(args.px) if name == "resnet18" else build_vit_s()
        pruned = copy.deepcopy(dense)
        notes = structured(pruned, x, importance=args.importance, round_to=args.round_to,
                           **({"hf_config": False} if name == "vit_s" else {}))
        print(f"# {name}: " + " | ".join(notes), file=sys.stderr)
        label = f"resnet18, {args.px} px" if name == "resnet18" else "ViT-S/16 (HF ViTModel), 224 px"
        latency_rows(label, dense, pruned, x, args)
    print(f"run took {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
