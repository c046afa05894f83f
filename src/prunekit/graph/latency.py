"""Latency model: the model's latency on the device at hand as a function of which units are kept.

Why: MACs mislead (a ViT-B that lost 3.8x MACs ran only 1.31x faster). Small ops are dominated by overhead, and a
conv's speed does not fall in step with its channels. So every matmul-like op of the cost model (each MAC term) is
timed alone on this device, at the recorded shapes, on a grid of kept fractions of its factors:

- conv (plain, grouped, depthwise, transposed) and linear with a parameter weight: a grid over the kept fraction of
  the output and the input channels (default 0.25, 0.5, 0.75, 1.0, rounded to whole channels); the op's latency
  is the bilinear interpolation of that table (linear extrapolation below the smallest point, floored at 0);
- any other MAC term (activation matmuls, fused attention): timed at full width and scaled by its MAC fraction;
- everything else (norms, activations, adds, pooling, Python): the remainder, the full model's latency minus the
  ops' sum, `fixed + per_activation * a`, where `a` is the kept fraction of the elements the timed ops output (the
  tensors norms and activations work on). Two points fit it: the full model (a = 1) and a copy pruned to half of
  every group's channels by graph surgery, both timed whole (a fixed cost alone would make half the latency look
  unreachable: on resnet18 the remainder is about a third of it, and it shrinks with the channels).

`LatencyModel.latency(keep)` is vectorized like `CostModel`, so selection can bisect on it.

Timings are cached in one JSON file per environment (device, torch version, thread count) under
$PRUNEKIT_CACHE_DIR/latency or ~/.cache/prunekit/latency, one entry per op signature (kind, shapes, arguments,
grid counts) plus the full model's latency per traced-graph signature; a second build on the same device runs no
timing. Pass `timer` to replace the clock (tests use a deterministic one).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.graph._latency_ops import (
    Op,
    cache_file,
    counts,
    default_timer,
    graph_key,
    load_cache,
    pair_terms,
    perf_timer,
    save_cache,
)
from prunekit.graph._trace import split_inputs
from prunekit.graph.surgery import remove_slices
from prunekit.layers import eval_mode

__all__ = ["GRID", "LatencyModel", "Timer", "default_timer", "latency_model", "perf_timer"]

Timer = Callable[[Callable[[], Any], str], float]
"""timer(fn, what) -> seconds of one call of fn; `what` is "model", "model@half" or the op's signature."""

GRID = (0.25, 0.5, 0.75, 1.0)


class LatencyModel:
    """Latency in seconds as a function of a keep vector over units (True = kept), graph order like CostModel.

    Attributes: n_units; fixed and per_activation (the remainder's seconds: fixed + per_activation * a, see the
    module docstring); dense_latency (all kept); measured (timings this build ran; 0 when all came from the
    cache); calibration_keep (the half-width keep vector the remainder was fitted on); ops (per op: kind, module
    path, seconds at full width).
    """

    def __init__(self, n_units: int, factors: list[Tensor], grid_terms: Sequence[tuple[int, int, Tensor, Tensor, Tensor]],
                 scaled_terms: Sequence[tuple[float, list[int]]], act_weights: Sequence[float],
                 ops: list[dict[str, Any]], measured: int) -> None:
        self.n_units = n_units
        self.fixed, self.per_activation = 0.0, 0.0
        self.calibration_keep = torch.ones(n_units, dtype=torch.bool)
        self.ops = ops
        self.measured = measured
        self.notes: list[str] = []
        lengths = [f.numel() for f in factors]
        self._idx = torch.cat(factors) if factors else torch.zeros(0, dtype=torch.int64)
        self._seg = torch.repeat_interleave(torch.arange(len(factors)), torch.tensor(lengths, dtype=torch.int64))
        self._len = torch.tensor(lengths, dtype=torch.float64).clamp(min=1)
        self._empty = torch.tensor([n == 0 for n in lengths], dtype=torch.bool)
        one = len(factors)  # index of the constant fraction 1.0
        self._ia = torch.tensor([one if a < 0 else a for a, *_ in grid_terms], dtype=torch.int64)
        self._ib = torch.tensor([one if b < 0 else b for _, b, *_ in grid_terms], dtype=torch.int64)
        k = len(GRID)
        self._ca = torch.stack([t[2] for t in grid_terms]) if grid_terms else torch.zeros(0, k, dtype=torch.float64)
        self._cb = torch.stack([t[3] for t in grid_terms]) if grid_terms else torch.zeros(0, k, dtype=torch.float64)
        self._tab = torch.stack([t[4] for t in grid_terms]) if grid_terms else torch.zeros(0, k, k, dtype=torch.float64)
        self._sbase = torch.tensor([b for b, _ in scaled_terms], dtype=torch.float64)
        pairs = [(t, f) for t, (_, fs) in enumerate(scaled_terms) for f in fs]
        self._sowner = torch.tensor([t for t, _ in pairs], dtype=torch.int64)
        self._sfac = torch.tensor([f for _, f in pairs], dtype=torch.int64)
        w = torch.tensor(list(act_weights), dtype=torch.float64)
        self._act = w / w.sum() if len(w) and float(w.sum()) > 0 else w
        self.dense_latency = self.latency(torch.ones(n_units, dtype=torch.bool))

    def set_remainder(self, fixed: float, per_activation: float, calibration_keep: Tensor | None = None) -> None:
        """Set the remainder (seconds outside the timed ops) and refresh `dense_latency`."""
        self.fixed, self.per_activation = float(fixed), float(per_activation)
        if calibration_keep is not None:
            self.calibration_keep = calibration_keep
        self.dense_latency = self.latency(torch.ones(self.n_units, dtype=torch.bool))

    def _fractions(self, keep: Tensor) -> Tensor:
        if keep.numel() != self.n_units:
            raise PrunekitError(f"latency: keep vector has {keep.numel()} entries, the graph has {self.n_units} units")
        ext = torch.cat([keep.to(torch.float64).flatten(), torch.ones(1, dtype=torch.float64)])
        kept = torch.zeros(len(self._len), dtype=torch.float64).index_add_(0, self._seg, ext[self._idx])
        frac = torch.where(self._empty, torch.ones_like(kept), kept / self._len)  # an empty factor is always kept
        return torch.cat([frac, torch.ones(1, dtype=torch.float64)])

    def activation_fraction(self, keep: Tensor) -> float:
        """Kept fraction of the elements the timed conv / linear ops output (1.0 when all kept)."""
        if len(self._act) == 0:
            return 1.0
        return float((self._act * self._fractions(keep)[self._ia]).sum())

    def op_latencies(self, keep: Tensor) -> Tensor:
        """Seconds per op term (grid terms first, then scaled ones) with units `keep`."""
        frac = self._fractions(keep)
        grid = _bilinear(self._ca, self._cb, self._tab, frac[self._ia], frac[self._ib])
        prod = torch.ones(len(self._sbase), dtype=torch.float64)
        if len(self._sfac):
            prod = prod.scatter_reduce(0, self._sowner, frac[self._sfac], reduce="prod")
        return torch.cat([grid, self._sbase * prod])

    def latency(self, keep: Tensor) -> float:
        """Predicted seconds of one forward on the example inputs with units `keep` (bool, length n_units)."""
        rest = self.fixed + self.per_activation * self.activation_fraction(keep)
        return rest + float(self.op_latencies(keep).sum())


def _bilinear(ca: Tensor, cb: Tensor, tab: Tensor, xa: Tensor, xb: Tensor) -> Tensor:
    """Per row: bilinear interpolation of tab[row] (K x K over coords ca[row], cb[row]) at (xa, xb); linear
    extrapolation below the first coordinate, clamped at the last; floored at 0. Repeated coordinates are allowed."""
    if len(ca) == 0:
        return torch.zeros(0, dtype=torch.float64)
    rows = torch.arange(len(ca))

    def bracket(c: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = torch.minimum(x, c[:, -1])
        hi = torch.searchsorted(c, x[:, None].contiguous(), right=True)[:, 0].clamp(1, c.shape[1] - 1)
        lo = hi - 1
        den = c[rows, hi] - c[rows, lo]
        w = torch.where(den > 0, (x - c[rows, lo]) / den.clamp(min=1e-12), torch.zeros_like(x))
        return lo, hi, w

    la, ha, wa = bracket(ca, xa)
    lb, hb, wb = bracket(cb, xb)
    v = ((1 - wa) * (1 - wb) * tab[rows, la, lb] + wa * (1 - wb) * tab[rows, ha, lb]
         + (1 - wa) * wb * tab[rows, la, hb] + wa * wb * tab[rows, ha, hb])
    return v.clamp(min=0)


# --------------------------------------------------------------------------- building
def latency_model(graph: Any, model: nn.Module, example_inputs: Any = None, *, grid: Sequence[float] = GRID,
                  timer: Timer | None = None, cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                  progress: bool | None = None, rounds: int = 3, calibrate: bool = True) -> LatencyModel:
    """Build (or load from the cache) the latency model of `model` for `graph` (a DependencyGraph of it).

    Args:
        graph: the model's DependencyGraph; the keep vector is over its units (groups concatenated in order).
        model: the model the graph was traced from (timed whole, and a half-width copy, for the remainder).
        example_inputs: defaults to the graph's; the device and batch the latency is for.
        grid: kept fractions timed per op slot, each in (0, 1]; 1.0 is always added.
        timer: timer(fn, what) -> seconds; default `default_timer` (minimum over repeated calls after warm-up).
        cache_dir: folder of the cache; default $PRUNEKIT_CACHE_DIR/latency or ~/.cache/prunekit/latency.
        use_cache: read and write the cache.
        progress: tqdm bar over ops (default: when more than 20 ops need timing).
        rounds: alternating timings of the whole model and its half-width copy (the minimum of each is kept).
        calibrate: build and time the half-width copy (a deep copy: peak memory about 1.5x the model); without it
            the remainder is a fixed cost.
    """
    bad = [p for p in grid if not isinstance(p, (int, float)) or not 0 < p <= 1]
    if bad or len(grid) == 0:
        raise PrunekitError(f"latency: grid fractions must lie in (0, 1], got {list(grid)!r}")
    grid = sorted(set(float(p) for p in grid) | {1.0})
    if not isinstance(rounds, int) or rounds < 1:
        raise PrunekitError(f"latency: rounds must be an integer >= 1, got {rounds!r}")
    timer = timer or default_timer
    inputs = graph.example_inputs if example_inputs is None else example_inputs
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    walk = graph._walk  # package-internal: the traced program and its MAC terms, in walk order
    unit = graph._unit_index()
    n_units = sum(g.size for g in graph.groups)
    path, env = cache_file(cache_dir, device)
    cache = load_cache(path, env) if use_cache else {"env": env, "ops": {}, "models": {}}
    measured = 0

    def timed(fn: Callable[[], Any], what: str) -> float:
        nonlocal measured
        measured += 1
        return float(timer(fn, what))

    pairs = list(zip(pair_terms(list(walk.ep.graph.nodes), walk.mac_terms), walk.mac_terms))
    todo = [(n, t) for n, t in pairs if n is not None]
    show = progress if progress is not None else len(todo) > 20
    from tqdm.auto import tqdm  # noqa: PLC0415 - only when building

    factors: list[Tensor] = []
    grid_terms, scaled, ops, unpaired, act = [], [], [], [], []
    for node, term in tqdm(pairs, desc="latency", disable=not show, leave=False):
        ids = [len(factors) + i for i in range(len(term.factors))]
        factors.extend(unit[f].to(torch.int64) for f in term.factors)
        op = Op(node, len(term.factors)) if node is not None else None
        if op is None:
            unpaired.append((len(scaled), term.base))  # seconds filled below from the ops' seconds per MAC
            scaled.append((0.0, ids))
            ops.append({"kind": "unpaired", "module": "", "seconds": None})
            continue
        ca, cb = counts(op.sizes[0], grid), counts(op.sizes[1], grid)
        sig = op.signature() + repr([ca, cb])
        entry = cache["ops"].get(sig)
        if entry is None and op.kind == "scaled":
            try:  # an op of the model's own code, called alone on random inputs: it may refuse them
                call = op.runner(ca[-1], cb[-1], device)
                call()
            except Exception:  # noqa: BLE001 - counted as unpaired (seconds per MAC) and noted below
                call = None
            if call is not None:
                t = timed(call, sig)
                entry = {"t": [[t] * len(cb)] * len(ca)}
                cache["ops"][sig] = entry
        elif entry is None:
            pts = {}
            for a in ca:
                for b in cb:
                    if (a, b) not in pts:
                        pts[(a, b)] = timed(op.runner(a, b, device), sig)
            entry = {"t": [[pts[(a, b)] for b in cb] for a in ca]}
            cache["ops"][sig] = entry
        if entry is None:
            unpaired.append((len(scaled), term.base))
            scaled.append((0.0, ids))
            ops.append({"kind": "unpaired", "module": "", "seconds": None})
            continue
        tab = torch.tensor(entry["t"], dtype=torch.float64)
        where = node.meta.get("nn_module_stack") or {}
        module = list(where.values())[-1][0] if where else ""
        ops.append({"kind": op.kind, "module": module, "seconds": float(tab[-1, -1])})
        if op.kind == "scaled":
            scaled.append((float(tab[-1, -1]), ids))
            continue
        sa, sb = op.slots
        act.append(float(node.meta["val"].numel()))
        grid_terms.append((ids[sa] if sa >= 0 else -1, ids[sb] if sb >= 0 else -1,
                           torch.tensor(ca, dtype=torch.float64) / op.sizes[0],
                           torch.tensor(cb, dtype=torch.float64) / op.sizes[1], tab))
    op_sum = sum(float(t[4][-1, -1]) for t in grid_terms) + sum(b for b, _ in scaled)
    per_mac = op_sum / max(1, sum(t.base for n, t in pairs if n is not None))
    for i, base in unpaired:  # MAC terms not paired with a node: the paired ops' seconds per MAC
        scaled[i] = (base * per_mac, scaled[i][1])
    lat = LatencyModel(n_units, factors, grid_terms, scaled, act, ops, 0)
    model_key = graph_key(list(walk.ep.graph.nodes)) + ("" if calibrate else "/fixed")
    half = _half_keep(graph)
    whole = cache["models"].get(model_key)
    if not isinstance(whole, dict):
        args, kwargs = split_inputs(inputs)
        whole = {"full": None, "half": None, "note": ""}
        with eval_mode(model), torch.no_grad():
            try:
                if not calibrate:
                    raise _Skipped
                pruned = copy.deepcopy(model)
                remove_slices(pruned, graph.removals(half))
                pruned(*args, **kwargs)
            except _Skipped:
                whole["note"], pruned = "calibrate=False: the remainder is a fixed cost", None
            except Exception as exc:  # noqa: BLE001 - the model's own code; recorded, fixed remainder only
                whole["note"] = f"half-width calibration model failed ({type(exc).__name__}: {str(exc)[:200]})"
                pruned = None
            for _ in range(rounds):  # alternating, the minimum of each: a burst of other work hits one round
                t = timed(lambda: model(*args, **kwargs), "model")
                whole["full"] = t if whole["full"] is None else min(whole["full"], t)
                if pruned is not None:
                    t = timed(lambda: pruned(*args, **kwargs), "model@half")
                    whole["half"] = t if whole["half"] is None else min(whole["half"], t)
        cache["models"][model_key] = whole
    if use_cache and measured:
        save_cache(path, cache)
    lat.measured = measured
    lat.notes = [whole["note"]] if whole.get("note") else []
    if unpaired:
        lat.notes.append(f"{len(unpaired)} MAC term(s) without a timed op: scaled by the timed ops' seconds per MAC")
    dense_keep = torch.ones(n_units, dtype=torch.bool)
    r_full = max(0.0, whole["full"] - float(lat.op_latencies(dense_keep).sum()))
    fixed, per = r_full, 0.0
    if whole["half"] is not None:
        hv = graph.keep_vector(half)
        r_half = min(max(0.0, whole["half"] - float(lat.op_latencies(hv).sum())), r_full)
        a = lat.activation_fraction(hv)
        per = min((r_full - r_half) / (1 - a), r_full) if a < 1 else 0.0
        fixed = r_full - per
        lat.set_remainder(fixed, per, hv)
    else:
        lat.set_remainder(fixed, per)
    return lat


class _Skipped(Exception):
    """calibrate=False: no half-width copy."""


def _half_keep(graph: Any) -> dict[int, Tensor]:
    """Every group keeps its frozen units and the first of its others, half of its units in all (at least one)."""
    out = {}
    for g in graph.groups:
        if not g.prunable:
            continue
        mask = torch.zeros(g.size, dtype=torch.bool)
        mask[list(g.frozen)] = True
        room = max(1, int(math.floor(g.size / 2 + 0.5))) - len(g.frozen)
        mask[g.prunable[:max(room, 0)]] = True
        if not bool(mask.any()):
            mask[g.prunable[0]] = True
        out[g.id] = mask
    return out
