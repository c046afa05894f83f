"""Export a (structured-)pruned model for deployment: ONNX with an onnxruntime output check, and torch.export.

Both export the finalized model: a copy with masks baked in (the caller's model is untouched), in eval mode, on the
example inputs' shapes (static). Structured pruning leaves ordinary, smaller layers, so nothing prunekit-specific
remains in the exported graph.

- `export_onnx`: `torch.onnx.export`. The torch.export-based exporter (`dynamo=True`, the default since torch 2.9)
  needs the `onnxscript` package; without it the TorchScript-based exporter (deprecated, still in torch 2.14) is
  used. `exporter="auto"` picks the first that is available and the result says which ran. The written file is
  run in onnxruntime on the example inputs and every output is compared with PyTorch's; a difference above
  `atol + rtol * max|reference|` is an error and the file is removed.
- `export_program`: `torch.export.export` + `torch.export.save` (a .pt2 archive that `torch.export.load` reads
  back without the model's Python class), checked the same way by loading the archive back.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import PrunekitError, choices_text
from prunekit.layers import call_model
from prunekit.masks import finalize

EXPORTERS = ("auto", "dynamo", "torchscript")


@dataclass(frozen=True)
class ExportResult:
    """What was written and how well it matches PyTorch (max |exported - pytorch| over all outputs)."""

    path: str
    format: str  # "onnx" | "torch-export"
    exporter: str  # "dynamo" | "torchscript" | "torch.export"
    max_abs_diff: float
    tolerance: float  # atol + rtol * max |pytorch output|
    file_bytes: int
    outputs: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _flat(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _flat(v)]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _flat(v)]
    if hasattr(obj, "to_tuple"):
        return _flat(obj.to_tuple())
    return []


def _split(example_inputs: Any) -> tuple[tuple, dict]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise PrunekitError(f"example_inputs must be a Tensor, a tuple of positional inputs or a dict of keyword "
                        f"inputs, got {type(example_inputs).__name__}")


class _KeywordsAsPositional(nn.Module):
    """Calls `inner(**dict(zip(names, args)))`: keyword inputs exported as positional ONNX inputs with those names
    (the TorchScript exporter mishandles keyword arguments of Hugging Face forwards)."""

    def __init__(self, inner: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner, self.names = inner, names

    def forward(self, *args: torch.Tensor) -> Any:
        return self.inner(**dict(zip(self.names, args)))


def _prepared(model: nn.Module) -> nn.Module:
    """A finalized eval-mode copy; quantized models are refused (their packed INT8 ops have no ONNX mapping)."""
    if not isinstance(model, nn.Module):
        raise PrunekitError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from prunekit.export.quantize_dynamic import is_quantized

    if is_quantized(model):
        raise PrunekitError("export a float model: dynamically quantized Linear layers have no ONNX / torch.export "
                            "form here (quantize in the runtime instead, e.g. onnxruntime's quantize_dynamic)")
    out = copy.deepcopy(model).eval()
    finalize(out)
    return out


def _check(reference: list[torch.Tensor], got: list[np.ndarray], atol: float, rtol: float,
           what: str) -> tuple[float, float]:
    """(max |got - reference| over all outputs, the limit atol + rtol * max |reference|); above the limit: error."""
    if len(reference) != len(got):
        raise PrunekitError(f"{what} returned {len(got)} output(s), PyTorch {len(reference)}")
    worst, scale = 0.0, 0.0
    for ref, val in zip(reference, got):
        ref_np = ref.detach().cpu().float().numpy()
        if tuple(ref_np.shape) != tuple(np.shape(val)):
            raise PrunekitError(f"{what} output shape {tuple(np.shape(val))} differs from PyTorch's {ref_np.shape}")
        if ref_np.size:
            worst = max(worst, float(np.max(np.abs(ref_np - np.asarray(val, dtype=np.float32)))))
            scale = max(scale, float(np.max(np.abs(ref_np))))
    limit = atol + rtol * scale
    if not worst <= limit:
        raise PrunekitError(f"{what} differs from PyTorch by {worst:.3g} (max abs), above the tolerance {limit:.3g}")
    return worst, limit


def _pick_exporter(exporter: str) -> str:
    if exporter not in EXPORTERS:
        raise PrunekitError(f"unknown ONNX exporter {exporter!r}; choose {choices_text(EXPORTERS)}")
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if exporter == "dynamo" and not has_onnxscript:
        raise PrunekitError("exporter 'dynamo' needs the onnxscript package (pip install onnxscript); "
                            "or use exporter='torchscript'")
    if exporter == "auto":
        return "dynamo" if has_onnxscript else "torchscript"
    return exporter


def _target(path: str | os.PathLike[str], suffix: str) -> Path:
    target = Path(path)
    if target.suffix != suffix:
        raise PrunekitError(f"output file {str(target)!r} must end in {suffix}")
    if not target.parent.is_dir():
        raise PrunekitError(f"folder {str(target.parent)!r} of the output file does not exist")
    if target.is_dir():
        raise PrunekitError(f"output {str(target)!r} is a folder; give a file name ending in {suffix}")
    return target


def export_onnx(model: nn.Module, example_inputs: Any, path: str | os.PathLike[str], *, exporter: str = "auto",
                opset: int | None = None, atol: float = 1e-4, rtol: float = 1e-4) -> ExportResult:
    """Write `model` (finalized copy) as ONNX to `path` and check it in onnxruntime against PyTorch.

    Args:
        model: a float model (dense, structured-pruned, or masked: masks are baked into the copy).
        example_inputs: a Tensor, tuple or dict (keyword inputs become the ONNX input names); shapes are fixed.
        path: the .onnx file to write (replaced if it exists).
        exporter: "auto", "dynamo" (needs onnxscript) or "torchscript".
        opset: ONNX opset (None: the exporter's default).
        atol, rtol: the output check passes when max |onnx - torch| <= atol + rtol * max |torch|.

    Raises:
        PrunekitError: a bad path or exporter, onnxruntime missing, an export failure, or outputs that differ.
    """
    target = _target(path, ".onnx")
    kind = _pick_exporter(exporter)
    try:
        import onnxruntime as ort
    except ImportError:
        raise PrunekitError("the ONNX output check needs onnxruntime: pip install 'prunekit[deploy]'") from None
    prepared = _prepared(model)
    args, kwargs = _split(example_inputs)
    with torch.inference_mode():
        reference = _flat(call_model(prepared, example_inputs))
    tmp = target.with_name(f".{target.name}.tmp.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = _KeywordsAsPositional(prepared, list(kwargs)) if kwargs else prepared
            torch.onnx.export(module, tuple(kwargs.values()) if kwargs else args, str(tmp), dynamo=kind == "dynamo",
                              opset_version=opset, input_names=list(kwargs) if kwargs else None,
                              **({"external_data": False} if kind == "dynamo" else {}))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        if kwargs:
            missing = [n for n in names if n not in kwargs]
            if missing:
                raise PrunekitError(f"ONNX inputs {missing} have no matching example input (given: {sorted(kwargs)})")
            feed = {n: kwargs[n].detach().cpu().numpy() for n in names}
        else:
            if len(names) > len(args):
                raise PrunekitError(f"the ONNX graph takes {len(names)} inputs, {len(args)} example input(s) given")
            feed = {n: args[i].detach().cpu().numpy() for i, n in enumerate(names)}
        got = session.run(None, feed)
        diff, limit = _check(reference, got, atol, rtol, "onnxruntime")
        os.replace(tmp, target)
    except PrunekitError:
        raise
    except Exception as exc:  # an exporter / runtime failure: one line naming the model, the traceback is noise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PrunekitError(f"ONNX export ({kind}) of {type(model).__name__} failed: {first[:300]}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(str(target), "onnx", kind, diff, limit, target.stat().st_size, len(reference))


def export_program(model: nn.Module, example_inputs: Any, path: str | os.PathLike[str], *, atol: float = 1e-5,
                   rtol: float = 1e-5) -> ExportResult:
    """Write `model` (finalized copy) with `torch.export.save` to `path` (.pt2) and check the archive loads back
    and gives PyTorch's outputs (same tolerance rule as `export_onnx`)."""
    target = _target(path, ".pt2")
    prepared = _prepared(model)
    args, kwargs = _split(example_inputs)
    with torch.inference_mode():
        reference = _flat(call_model(prepared, example_inputs))
    tmp = target.with_name(f".{target.name}.tmp.pt2")
    try:
        program = torch.export.export(prepared, args, kwargs or None, strict=False)
        torch.export.save(program, str(tmp))
        loaded = torch.export.load(str(tmp)).module()
        with torch.inference_mode():
            got = [t.detach().cpu().float().numpy() for t in _flat(loaded(*args, **kwargs))]
        diff, limit = _check(reference, got, atol, rtol, "the saved torch.export program")
        os.replace(tmp, target)
    except PrunekitError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PrunekitError(f"torch.export of {type(model).__name__} failed: {first[:300]}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(str(target), "torch-export", "torch.export", diff, limit, target.stat().st_size,
                        len(reference))
