"""`sparsify`: swap each Linear / 1x1 conv for a sparse kernel only where a measurement at its real input shape says
it is faster than dense, then check the whole model end to end.

Steps: find candidate layers (plain float32/float64 CPU Linear or pointwise Conv2d with zeros at or above
`min_sparsity`) -> one forward on the example inputs with hooks records each layer's input -> per layer, time dense
vs each sparse layout on that input -> swap in the fastest sparse module if it beats dense by `margin` ->
check the outputs match dense (else revert) and time the whole model with the dense and the sparse layers (swapped
back and forth, interleaved) -> if the sparsified model is slower overall, say so and (by default) revert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError, choices_text, suggest
from prunekit.layers import call_model, eval_mode
from prunekit.masks import has_masks
from prunekit.runtime.kernels import CPU_SPARSE_DTYPES, KINDS, block_sparsity, bsr_blocks, sparsity
from prunekit.runtime.modules import is_pointwise_conv, make_sparse, revert, set_submodule
from prunekit.runtime.report import LayerChoice, SparsifyReport
from prunekit.runtime.timing import InterleavedTimer, Timer

MODEL_SCOPE = "<model>"
# Largest |dense - sparsified| output difference accepted, relative to max(1, largest |dense output|): float32
# summation order differs between MKL's sparse kernel and the dense GEMM (measured on MiniLM: ~5e-6).
OUTPUT_TOL = 1e-3
ON_SLOWER = ("revert", "keep")


def _check_options(kinds: Sequence[str], min_sparsity: float, margin: float, threads: int | None,
                   on_slower: str, bsr_sizes: Sequence[int]) -> None:
    if isinstance(kinds, str) or not kinds:
        raise PrunekitError(f"kinds must be a non-empty list of {choices_text(KINDS)}, got {kinds!r}")
    for kind in kinds:
        if kind not in KINDS:
            raise PrunekitError(f"unknown kernel kind {kind!r}; choose from {choices_text(KINDS)}."
                                f"{suggest(str(kind), KINDS)}")
    for name, value in (("min_sparsity", min_sparsity), ("margin", margin)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise PrunekitError(f"{name} must be a number in [0, 1), got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise PrunekitError(f"threads must be an integer >= 1 or None, got {threads!r}")
    if on_slower not in ON_SLOWER:
        raise PrunekitError(f"unknown on_slower {on_slower!r}; choose from {choices_text(ON_SLOWER)}")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 2 for b in bsr_sizes):
        raise PrunekitError(f"bsr_sizes must be integers >= 2, got {tuple(bsr_sizes)!r}")


def _layer_type(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "Linear"
    if is_pointwise_conv(module):
        return "Conv2d 1x1"
    return None


def _skip_reason(module: nn.Module, density_zero: float, min_sparsity: float) -> str | None:
    w = module.weight
    if w.device.type != "cpu":
        return f"weight on {w.device.type}: the sparse runtime is for CPU (on CUDA see to_semi_structured)"
    if w.dtype not in CPU_SPARSE_DTYPES:
        return f"dtype {str(w.dtype).replace('torch.', '')}: torch's CPU sparse kernels need float32 / float64"
    if density_zero < min_sparsity:
        return f"sparsity {density_zero:.1%} < min_sparsity {min_sparsity:.0%}"
    return None


def _capture_inputs(model: nn.Module, names: list[str], example_inputs: Any) -> dict[str, Tensor]:
    """Each named layer's first positional input during one forward (detached clones)."""
    seen: dict[str, Tensor] = {}
    handles = []
    for name in names:
        def hook(_m: nn.Module, args: tuple, name: str = name) -> None:
            if name not in seen and args and isinstance(args[0], Tensor):
                seen[name] = args[0].detach().clone()
        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with eval_mode(model), torch.inference_mode():
            call_model(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _checked_times(timer: Timer, scope: str, candidates: dict[str, Callable[[], object]]) -> dict[str, float]:
    times = dict(timer(scope, candidates))
    missing = [k for k in candidates if k not in times]
    bad = {k: v for k, v in times.items() if k in candidates and not (isinstance(v, (int, float)) and v > 0)}
    if missing or bad:
        raise PrunekitError(f"timer for {scope} must return a positive time for each of {list(candidates)}; "
                            f"missing {missing}, invalid {bad}")
    return {k: float(times[k]) for k in candidates}


def _tensors(obj: Any) -> Iterator[Tensor]:
    """Every floating-point tensor inside nested tuples, lists, dicts and HF model outputs (`to_tuple()`)."""
    if isinstance(obj, Tensor):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            yield from _tensors(value)
    elif hasattr(obj, "to_tuple"):
        yield from _tensors(obj.to_tuple())


def _max_abs(tensors: list[Tensor]) -> float:
    return max((float(t.abs().max()) for t in tensors if t.numel()), default=0.0)


def _max_diff(reference: list[Tensor], outputs: list[Tensor]) -> float | None:
    """Largest |difference| over matching outputs; None when the outputs do not match in number or shape."""
    if len(reference) != len(outputs) or any(a.shape != b.shape for a, b in zip(reference, outputs)):
        return None
    return max((float((a - b).abs().max()) for a, b in zip(reference, outputs) if a.numel()), default=0.0)


def choose(times: dict[str, float], margin: float) -> str:
    """The fastest label if it beats "dense" by `margin` (t <= (1 - margin) * t_dense), else "dense"."""
    best = min(times, key=lambda k: (times[k], k != "dense"))
    return best if best != "dense" and times[best] <= (1.0 - margin) * times["dense"] else "dense"


def sparsify(
    model: nn.Module,
    example_inputs: Any,
    *,
    kinds: Sequence[str] = KINDS,
    min_sparsity: float = 0.5,
    margin: float = 0.05,
    timer: Timer | None = None,
    threads: int | None = None,
    check_model: bool = True,
    on_slower: str = "revert",
    bsr_sizes: Sequence[int] = (4, 8, 16),
) -> SparsifyReport:
    """Swap Linear / 1x1 Conv2d layers for CSR / BSR sparse modules where measured faster, in place.

    Args:
        model: a finalized model (masks baked in: call `prunekit.finalize` first), on CPU.
        example_inputs: inputs at the shapes and batch the model will serve (Tensor, tuple or dict).
        kinds: kernels to consider; "dense" is always the baseline. "bsr" tries each square block of `bsr_sizes`
            that divides the weight and whose share of all-zero blocks reaches `min_sparsity`.
        min_sparsity: layers with fewer zeros keep dense without timing (at 50% torch's CSR measured 1.5-4x slower).
        margin: a sparse kernel must be at least this fraction faster than dense to be swapped in.
        timer: `timer(scope, {label: fn}) -> {label: ms}`; default `InterleavedTimer()` (wall clock).
        threads: intra-op CPU threads for all timings (restored afterwards); None keeps the current setting.
        check_model: after the swaps, check the outputs match dense (else revert) and time the whole model dense
            vs sparsified.
        on_slower: if the sparsified model is slower end to end: "revert" (restore the dense layers) or "keep".
        bsr_sizes: square BSR block sizes to try (MKL on CPU supports square blocks only).

    Returns:
        A `SparsifyReport` (per-layer sparsity, timings, choice; whole-model times; messages).
    """
    _check_options(kinds, min_sparsity, margin, threads, on_slower, bsr_sizes)
    if has_masks(model):
        raise PrunekitError("model still has masks; call prunekit.finalize(model) before sparsify")
    timer = timer if timer is not None else InterleavedTimer()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        report = _sparsify(model, example_inputs, list(kinds), float(min_sparsity), float(margin), timer,
                           tuple(bsr_sizes))
        report.threads = torch.get_num_threads()
        if check_model and report.swapped:
            _check_whole_model(model, example_inputs, report, timer, on_slower)
    except BaseException:
        revert(model)  # never leave a half-sparsified model behind
        raise
    finally:
        torch.set_num_threads(previous_threads)
    return report


def _sparsify(model: nn.Module, example_inputs: Any, kinds: list[str], min_sparsity: float, margin: float,
              timer: Timer, bsr_sizes: tuple[int, ...]) -> SparsifyReport:
    rows: dict[str, LayerChoice] = {}
    todo: list[tuple[str, nn.Module, str, float]] = []
    for name, module in model.named_modules():
        kind = _layer_type(module)
        if kind is None or not isinstance(getattr(module, "weight", None), Tensor):
            continue
        zeros = sparsity(module.weight.detach())
        reason = _skip_reason(module, zeros, min_sparsity)
        if reason is None:
            todo.append((name, module, kind, zeros))
        else:
            rows[name] = LayerChoice(name, kind, tuple(module.weight.shape), (), zeros, {}, "dense", 1.0, reason)
    inputs = _capture_inputs(model, [t[0] for t in todo], example_inputs)
    for name, module, kind, zeros in todo:
        x = inputs.get(name)
        if x is None:
            rows[name] = LayerChoice(name, kind, tuple(module.weight.shape), (), zeros, {}, "dense", 1.0,
                                     "not called by the forward on the example inputs")
            continue
        sparse_modules = _sparse_candidates(module, kinds, min_sparsity, bsr_sizes)
        candidates: dict[str, Callable[[], object]] = {"dense": lambda m=module, x=x: m(x)}
        candidates.update({label: (lambda m=m, x=x: m(x)) for label, m in sparse_modules.items()})
        times = _checked_times(timer, name, candidates) if sparse_modules else {}
        choice = choose(times, margin) if times else "dense"
        if choice != "dense":
            set_submodule(model, name, sparse_modules[choice])
        reason = ("no sparse kind applies (kinds / block sizes)" if not times else
                  f"{choice} fastest" if choice != "dense" else
                  f"no sparse kernel beats dense by {margin:.0%}")
        speedup = times["dense"] / times[choice] if times else 1.0
        rows[name] = LayerChoice(name, kind, tuple(module.weight.shape), tuple(x.shape), zeros, times, choice,
                                 speedup, reason)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    layers = sorted(rows.values(), key=lambda c: order.get(c.name, len(order)))
    return SparsifyReport(layers=layers, margin=margin, threads=torch.get_num_threads())


def _sparse_candidates(module: nn.Module, kinds: list[str], min_sparsity: float,
                       bsr_sizes: tuple[int, ...]) -> dict[str, nn.Module]:
    matrix = module.weight.detach().reshape(module.weight.shape[0], -1)
    out: dict[str, nn.Module] = {}
    if "csr" in kinds:
        out["csr"] = make_sparse(module, "csr")
    if "bsr" in kinds:
        for b in bsr_blocks(matrix, bsr_sizes):
            if block_sparsity(matrix, b) >= min_sparsity:
                out[f"bsr {b}x{b}"] = make_sparse(module, "bsr", b)
    return out


def _check_whole_model(model: nn.Module, example_inputs: Any, report: SparsifyReport, timer: Timer,
                       on_slower: str) -> None:
    """Time the model with its dense and its sparse layers (swapped in before each call); revert if slower."""
    sparse = {c.name: model.get_submodule(c.name) for c in report.swapped}
    dense = {name: m.to_dense() for name, m in sparse.items()}  # type: ignore[operator]

    def run(layers: dict[str, nn.Module]) -> Callable[[], object]:
        def fn() -> object:
            for name, m in layers.items():
                set_submodule(model, name, m)
            return call_model(model, example_inputs)
        return fn

    with eval_mode(model):
        try:
            with torch.inference_mode():
                reference = list(_tensors(run(dense)()))
                try:
                    outputs = list(_tensors(run(sparse)()))
                except RuntimeError as exc:  # e.g. a model that .view()s a layer output the sparse path leaves strided
                    report.revert(model)
                    report.messages.append(f"the sparsified model failed to run ({str(exc).splitlines()[0]}); "
                                           "reverted to the dense layers")
                    return
            report.max_abs_diff = _max_diff(reference, outputs)
            if report.max_abs_diff is None or report.max_abs_diff > OUTPUT_TOL * max(1.0, _max_abs(reference)):
                report.revert(model)
                report.messages.append(f"the sparsified model's outputs differ from dense (max |diff| "
                                       f"{report.max_abs_diff}); reverted to the dense layers")
                return
            times = _checked_times(timer, MODEL_SCOPE, {"dense": run(dense), "sparse": run(sparse)})
        finally:
            if not report.reverted:
                for name, m in sparse.items():
                    set_submodule(model, name, m)
    report.model_dense_ms, report.model_sparse_ms = times["dense"], times["sparse"]
    report.slower_overall = times["sparse"] > times["dense"]
    if report.slower_overall:
        text = (f"the sparsified model is slower than dense end to end ({times['sparse']:.2f} ms vs "
                f"{times['dense']:.2f} ms)")
        if on_slower == "revert":
            report.revert(model)
            report.messages.append(text + "; reverted to the dense layers")
        else:
            report.messages.append(text + "; kept as asked (on_slower='keep'): report.revert(model) restores dense")
