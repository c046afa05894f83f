"""MiniLM at half the MACs (l1, least_squares): embedding fidelity vs the ridge damping and the calibration shape.

Reuses benchmarks/structured_latency.py's data: calibration on 32 packed 128-token train windows or 128 padded train
lines; fidelity = mean cosine of mean-pooled embeddings on 256 held-out test lines and 32 packed test windows.
Run: python benchmarks/minilm_compensation_damp.py
"""
import copy, sys, torch
sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
import structured_latency as S
dense, tok = S.minilm()
one = S.windows(tok, "train", 1); x = {"input_ids": one, "attention_mask": torch.ones_like(one)}
test = S.spoken_lines("test"); held = test[::max(1, len(test)//256)][:256]; packed = S.windows(tok, "test", 32)
ref = S.embeddings(dense, tok, held, packed); n = len(held)
for fmt in ("windows", "lines"):
    calib = S.calibration(tok, fmt, 32 if fmt == "windows" else 128)
    for mode, opt in (("hf", {}), ("layer", {"hf_config": False})):
        for damp in (0.01, 0.1):
            m = copy.deepcopy(dense)
            S.structured(m, x, calib, importance="l1", compensate="least_squares", damp=damp, **opt)
            cos = torch.nn.functional.cosine_similarity(ref, S.embeddings(m, tok, held, packed), dim=-1)
            print(f"calib {fmt} mode {mode} damp {damp}: lines {cos[:n].mean():.3f} windows {cos[n:].mean():.3f}", flush=True)
