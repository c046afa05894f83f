"""One-shot pruning of the real MiniLM (all-MiniLM-L6-v2): embedding fidelity and genre accuracy vs dense.

    python benchmarks/minilm_oneshot.py [--nsamples 64] [--seq-len 128] [--probe-train 2048] [--genre-test 768]
                                        [--retrain 1024] [--only magnitude,wanda,...]

Settings: magnitude / wanda / sparsegpt at 50%, 60%, 70% unstructured and 2:4 (every Linear inside the 6 encoder
blocks; embeddings and the pooler dense; magnitude with protect_first: false so it prunes the same layers),
llm_width (target params_ratio 0.8 of the whole model, embeddings included; defaults otherwise) and llm_depth
(drop 1 and 2 blocks, angular distance). Calibration: `nsamples` windows of `seq_len` tokens of Shakespeare's train
split tokenized by MiniLM's own tokenizer (found in its folder; no special tokens), seed 0.

Metrics (the model run with 1 torch thread):
- fidelity: mean cosine between the pruned and the dense model's mean-pooled embeddings of 256 held-out spoken lines
  of the Shakespeare test split (every k-th line of at least 20 characters);
- genre (frozen probe): a logistic regression (sklearn, standardized features) trained once on the dense model's
  embeddings of the first `probe-train` passages of shakespeare-genre's train split, applied to each model's
  embeddings of the first `genre-test` passages of its test split (3 balanced classes: chance 33%);
- genre (retrained probe): the same probe refit on each model's own embeddings of the first `retrain` train passages
  (0 turns it off);
- pruning time: wall time of `prunekit.prune` (calibration tokenization included) plus `finalize`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import prunekit
from prunekit.data import load_dataset, mean_pool, minilm_path
from prunekit.masks import finalize

BLOCKS = "re:encoder\\.layer\\..*"


def settings(only: set[str] | None) -> list[tuple[str, str, dict]]:
    """(method, setting label, stage) for every row of the table."""
    rows = []
    for method in ("magnitude", "wanda", "sparsegpt"):
        for label, shape in (("50%", {"sparsity": 0.5}), ("60%", {"sparsity": 0.6}), ("70%", {"sparsity": 0.7}),
                             ("2:4", {"pattern": "2:4"})):
            rows.append((method, label, {"method": method, **shape, "targets": [BLOCKS]}))
    rows.append(("llm_width", "params 0.8", {"method": "llm_width", "target": {"params_ratio": 0.8}}))
    rows.append(("llm_depth", "drop 1", {"method": "llm_depth", "drop": 1}))
    rows.append(("llm_depth", "drop 2", {"method": "llm_depth", "drop": 2}))
    return [r for r in rows if only is None or r[0] in only]


def held_out_lines(n: int = 256) -> list[str]:
    text = load_dataset("shakespeare").test.text
    lines = [ln.strip() for ln in text.splitlines()
             if len(ln.strip()) >= 20 and not ln.strip().endswith(":") and not ln.isupper()]
    return lines[:: max(1, len(lines) // n)][:n]


def embed(model, tok, texts: list[str], batch: int = 64) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            out.append(mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]))
    return torch.cat(out)


def fit_probe(x: torch.Tensor, y: list[int]):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x.numpy(), np.asarray(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--probe-train", type=int, default=2048)
    parser.add_argument("--genre-test", type=int, default=768)
    parser.add_argument("--retrain", type=int, default=1024)
    parser.add_argument("--only", default=None, help="comma-separated methods to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    genre = load_dataset("shakespeare-genre")
    train = genre.train.items[: args.probe_train]
    test = genre.test.items[: args.genre_test]
    lines = held_out_lines()
    dense = AutoModel.from_pretrained(minilm_path()).eval()
    ref = embed(dense, tok, lines)
    dense_train = embed(dense, tok, [t for t, _ in train])
    probe = fit_probe(dense_train, [y for _, y in train])
    y_test = np.asarray([y for _, y in test])
    calib = {"nsamples": args.nsamples, "seq_len": args.seq_len, "seed": 0}

    def score(model) -> tuple[float, float, float | None]:
        cos = torch.nn.functional.cosine_similarity(ref, embed(model, tok, lines), dim=-1).mean().item()
        x_test = embed(model, tok, [t for t, _ in test])
        frozen = float((probe.predict(x_test.numpy()) == y_test).mean())
        retrained = None
        if args.retrain:
            sub = train[: args.retrain]
            own = fit_probe(embed(model, tok, [t for t, _ in sub]), [y for _, y in sub])
            retrained = float((own.predict(x_test.numpy()) == y_test).mean())
        return cos, frozen, retrained

    def params(model) -> int:
        return sum(p.numel() for p in model.parameters())

    print("| method | setting | params (M) | fidelity (cos) | genre acc, frozen probe | genre acc, retrained probe "
          "| pruning time (s) |", flush=True)
    print("|---|---|---|---|---|---|---|", flush=True)

    def row(method: str, label: str, model, seconds: float) -> None:
        cos, frozen, retrained = score(model)
        re_txt = "-" if retrained is None else f"{100 * retrained:.1f}%"
        print(f"| {method} | {label} | {params(model) / 1e6:.2f} | {cos:.4f} | {100 * frozen:.1f}% | {re_txt} "
              f"| {seconds:.1f} |", flush=True)

    row("dense", "-", dense, 0.0)
    for method, label, stage in settings(set(args.only.split(",")) if args.only else None):
        model = AutoModel.from_pretrained(minilm_path()).eval()  # _name_or_path: the folder, so its tokenizer
        stage = dict(stage)
        if method == "magnitude":
            stage["protect_first"] = False
        else:
            stage["calibration"] = calib
        start = time.perf_counter()
        prunekit.prune(model, {"stages": [stage]})
        finalize(model)
        seconds = time.perf_counter() - start
        row(method, label, model.eval(), seconds)


if __name__ == "__main__":
    main()
