"""Resident memory of one-shot pruning with the runner's disk spill (slow).

A random Llama (8 blocks, hidden 512, GQA) is pruned with Wanda at 50% from 32 calibration rows of 512 tokens; the
block-input cache is about 40 MB (hidden states + rotary cos / sin), several times one block's weights (~4 MB) and
far above the spill budget (1 MB). Each case runs in a fresh child process (so one case's freed memory cannot hide
in the other's heap), which resets the kernel's peak-RSS counter (`/proc/self/clear_refs`, 5) after building the
model and the samples, prunes, and reports VmHWM - VmRSS-at-reset: the resident growth during pruning, whatever holds
it (torch CPU tensors are invisible to tracemalloc). The weights are resident before the reset, so the growth is the
cache, the keep-masks (1 byte per pruned weight, ~8 MB here), per-layer scores and one block's forward temporaries.
Measured (2026-11-28, 1 thread): growth 65.1 MB without spill, 24.5 MB with a 1 MB budget; cache 42.1 MB.

    python tests/llm/test_memory.py none|budget   # one child run: prints growth_bytes cache_bytes seconds
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HIDDEN, LAYERS, NSAMPLES, SEQ_LEN = 512, 8, 32, 512


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _child(mode: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prunekit.llm import capture_block_inputs, find_blocks
    from prunekit.llm.spill import call_bytes
    from prunekit.methods.base import PruneContext
    from prunekit.methods.wanda.config import WandaConfig
    from prunekit.methods.wanda.method import WandaMethod
    from prunekit.recipes.schema import build_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=HIDDEN, intermediate_size=256, num_hidden_layers=LAYERS,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=SEQ_LEN)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 256, (NSAMPLES, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    one = capture_block_inputs(model, find_blocks(model)[1][0], [{"input_ids": ids[:1]}])[0]
    cache_bytes = call_bytes(one) * NSAMPLES
    del one
    stage: dict = {"sparsity": 0.5, "calibration": {"nsamples": NSAMPLES}}
    if mode == "budget":
        stage["memory_budget"] = "1MB"
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    base = _status("VmRSS")
    start = time.perf_counter()
    config = build_config(WandaConfig, stage)
    WandaMethod().apply(model, config, PruneContext(data=ids))  # the pruning alone (no report, no full forward)
    seconds = time.perf_counter() - start
    print(_status("VmHWM") - base, cache_bytes, f"{seconds:.1f}")


def _run(mode: str) -> tuple[int, int]:
    # a fixed glibc mmap threshold returns freed tensors to the OS, so RSS tracks live memory rather than heap
    # pages glibc keeps after a free (with its default dynamic threshold both cases gain ~30 MB more, noisily)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    growth, cache, _seconds = out.stdout.split()[-3:]
    return int(growth), int(cache)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_spill_keeps_peak_memory_near_one_block():
    in_ram, cache = _run("none")
    spilled, _ = _run("budget")
    # without spill the whole cache is resident at once; with it, the growth is masks + one sample's temporaries
    assert in_ram > cache, (in_ram, cache)
    assert spilled < 0.6 * in_ram, (spilled, in_ram)
    assert in_ram - spilled > 0.75 * cache, (in_ram, spilled, cache)


if __name__ == "__main__":
    _child(sys.argv[1])
