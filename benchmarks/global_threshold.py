"""Benchmark: exact global magnitude threshold over a whole model, prunekit's streaming select vs torch baselines.

For each size, synthetic fp32 weights with the shapes of a Llama-style decoder (q, k, v, o, gate, up, down per block)
are built, and each method finds the global threshold that prunes `--sparsity` of all weights by |w|:

- prunekit: `select_global` (streaming radix select; exact count, ties broken deterministically);
- torch.quantile on the concatenated scores (older torch raised past 2**24 elements; 2.x accepts them);
- torch.kthvalue on the concatenated scores;
- torch.sort (stable) of the concatenated scores.

Each (size, method) runs in a fresh subprocess. Peak extra memory = the process's peak resident set (VmHWM, reset
with /proc/self/clear_refs once the weights exist and glibc's free memory has been returned with malloc_trim) minus
its resident set at that moment; where clear_refs is not writable, a psutil RSS sampler thread (1 ms) is used
instead. The table says which. A baseline whose predicted peak
(bytes per element measured at a smaller size, or a formula) does not fit in the memory available is reported as
skipped rather than risking the OOM killer.

Run:  python benchmarks/global_threshold.py --sizes 50M,1B
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import threading
import time

import psutil
import torch

from prunekit.importance import magnitude
from prunekit.patterns import select_global

METHODS = ("prunekit", "quantile", "kthvalue", "sort")
# extra bytes per element when no smaller size was measured: concat (4) + kthvalue copy (4) + int64 indices (8); sort
# also returns sorted values and int64 indices and needs merge scratch
FORMULA_BYTES = {"prunekit": 0.1, "quantile": 4.0, "kthvalue": 16.0, "sort": 24.0}


def parse_size(text: str) -> int:
    """'50M' -> 50_000_000, '1B' -> 1_000_000_000, '2000000' -> 2_000_000."""
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def layer_shapes(target: int) -> list[tuple[int, int]]:
    """Shapes of the linear layers of a Llama-style decoder with about `target` parameters."""
    d, f = (512, 1408) if target < 300_000_000 else (2048, 5632)
    block = [(d, d)] * 4 + [(f, d), (f, d), (d, f)]
    per_block = sum(a * b for a, b in block)
    return block * max(1, round(target / per_block))


def build_weights(target: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * 0.02 for shape in layer_shapes(target)]


class PeakMeter:
    """Peak resident memory above the level at `start()`: VmHWM after clear_refs, or a psutil sampler thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.how = "VmHWM after clear_refs"
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:  # hand memory that is free but still held by glibc back to the OS, so the baseline is what is live
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            self.how = "psutil RSS sampled every 1 ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
        self.base = self.proc.memory_info().rss
        self._peak = self.base
        if self._thread is not None:
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def stop(self) -> int:
        """Peak extra bytes since `start()`."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            return self._peak - self.base
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        return max(0, hwm - self.base)


def concat_scores(weights: list[torch.Tensor]) -> torch.Tensor:
    """The baselines' input: all |w| in one preallocated tensor (no per-layer temporaries kept alive)."""
    flat = torch.empty(sum(w.numel() for w in weights))
    offset = 0
    for w in weights:
        torch.abs(w, out=flat[offset : offset + w.numel()].view_as(w))
        offset += w.numel()
    return flat


def run_method(method: str, weights: list[torch.Tensor], n_prune: int, chunk: int) -> dict:
    """Find the value of the n_prune-th smallest |w|; returns {'threshold': ...} (the measured section)."""
    if method == "prunekit":
        sel = select_global([lambda w=w: magnitude(w) for w in weights], n_prune, chunk_size=chunk)
        return {"threshold": sel.cuts[0].value, "selection": sel}
    flat = concat_scores(weights)
    if method == "quantile":
        q = torch.quantile(flat, n_prune / flat.numel(), interpolation="lower")
        return {"threshold": float(q)}
    if method == "kthvalue":
        return {"threshold": float(torch.kthvalue(flat, n_prune).values)}
    if method == "sort":
        values, _ = torch.sort(flat, stable=True)
        return {"threshold": float(values[n_prune - 1])}
    raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def verify(weights: list[torch.Tensor], n_prune: int, selection, chunk: int) -> str:
    """Exactness check for prunekit: threshold equals kthvalue's, masks prune exactly n_prune (stable tie order)."""
    flat = concat_scores(weights)
    ref = float(torch.kthvalue(flat, n_prune).values)
    del flat
    pruned = 0
    for i, w in enumerate(weights):
        pruned += int((~selection.keep_mask(i, magnitude(w))).sum())
    value = selection.cuts[0].value
    ok = value == ref and pruned == n_prune == selection.n_pruned
    return f"{'exact' if ok else 'MISMATCH'}: threshold {value:.6g} vs kthvalue {ref:.6g}, zeros {pruned} of {n_prune}"


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    weights = build_weights(args.size, args.seed)
    total = sum(w.numel() for w in weights)
    if args.mem_limit:  # a safety net: fail with an allocation error instead of waking the OOM killer
        vms = psutil.Process().memory_info().vms
        resource.setrlimit(resource.RLIMIT_AS, (vms + args.mem_limit, resource.RLIM_INFINITY))
    n_prune = int(args.sparsity * total + 0.5)
    run_method(args.method, [torch.randn(64, 64)], 100, args.chunk_size)  # warm-up: one-time costs off the clock
    meter = PeakMeter()
    meter.start()
    t0 = time.perf_counter()
    result: dict = {"params": total, "model_bytes": total * 4}
    try:
        out = run_method(args.method, weights, n_prune, args.chunk_size)
        result["seconds"] = time.perf_counter() - t0
        result["peak_extra"] = meter.stop()
        result["note"] = f"threshold {out['threshold']:.6g}"
        if args.method == "prunekit" and args.check:
            result["note"] = verify(weights, n_prune, out["selection"], args.chunk_size)
    except (RuntimeError, MemoryError, IndexError) as e:
        result["seconds"] = time.perf_counter() - t0
        result["peak_extra"] = meter.stop()
        result["note"] = f"fails: {str(e).splitlines()[0][:90]}"
    result["how"] = meter.how
    if os.environ.get("GT_DEBUG"):
        with open("/proc/self/smaps_rollup") as f:
            result["smaps"] = {l.split(":")[0]: l.split()[1] for l in f if ":" in l and "kB" in l}
    print("RESULT " + json.dumps(result), flush=True)


def run_one(args: argparse.Namespace, size: int, method: str, mem_limit: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--size", str(size), "--method", method,
           "--sparsity", str(args.sparsity), "--seed", str(args.seed), "--chunk-size", str(args.chunk_size),
           "--threads", str(args.threads), "--mem-limit", str(mem_limit)]
    cmd.append("--check" if args.check and size <= args.check_max else "--no-check")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"note": f"timeout after {args.timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"note": f"worker died (exit {proc.returncode}): {tail[:90]}"}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="50M,1B", help="comma-separated parameter counts, e.g. 50M,1B")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--chunk-size", type=int, default=1 << 22)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per (size, method) run")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per (size, method): time = fastest, memory = lowest - highest peak")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="verify prunekit's selection against kthvalue (at sizes <= --check-max)")
    p.add_argument("--check-max", type=parse_size, default=parse_size("100M"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--mem-limit", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    methods = [m.strip() for m in args.methods.split(",")]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    print("| params | method | time (s) | peak extra memory | extra / model bytes | result |")
    print("|---|---|---|---|---|---|")
    per_element: dict[str, float] = {}
    how = set()
    for size in sorted(parse_size(s) for s in args.sizes.split(",")):
        params = sum(a * b for a, b in layer_shapes(size))
        for method in methods:
            extra = params * per_element.get(method, FORMULA_BYTES[method])
            need = params * 4 + extra + (1 << 30)
            avail = psutil.virtual_memory().available
            if need > 0.8 * avail:
                r = {"note": f"skipped: predicted peak {need / 2**30:.1f} GiB (weights + extra) > 80% of "
                             f"{avail / 2**30:.1f} GiB available"}
            else:
                runs = [run_one(args, size, method, int(1.5 * extra) + (2 << 30)) for _ in range(args.repeat)]
                done = [x for x in runs if "peak_extra" in x]
                r = done[0] if done else runs[0]
            if "peak_extra" in r:
                how.add(r["how"])
                peaks = sorted(x["peak_extra"] for x in done)
                if not r["note"].startswith("fails"):
                    per_element[method] = peaks[-1] / params
                t = f"{min(x['seconds'] for x in done):.2f}"
                extra = " - ".join(dict.fromkeys(f"{v / 2**30:.3f}" for v in (peaks[0], peaks[-1]))) + " GiB"
                ratio = " - ".join(dict.fromkeys(f"{v / (params * 4):.3f}" for v in (peaks[0], peaks[-1]))) + "x"
            else:
                t = extra = ratio = "-"
            print(f"| {params / 1e6:,.0f}M | {method} | {t} | {extra} | {ratio} | {r['note']} |", flush=True)
    print(f"\npeak extra memory measured as: {', '.join(sorted(how)) or '-'}; model bytes = 4 x params (fp32); "
          f"{args.repeat} run(s) each: time = fastest, memory = lowest - highest peak")


if __name__ == "__main__":
    main()
