"""save_compressed / load_compressed / describe: a whole model in one safetensors file in the compressed format.

Which tensors are encoded: floating-point *parameters* with ndim >= 2 (Linear / conv / embedding weights), through
their (out, in) matrix view (transformers' Conv1D transposed). Everything else (biases, norms, buffers such as
BatchNorm statistics or QuantLinear codes) is stored raw under its own name, with no entry. Tied tensors are stored
once; the other names are recorded as aliases. The header's `__metadata__` holds the format name, its version and a
JSON object with one entry per encoded or aliased state_dict key (see docs/storage.md).
"""

from __future__ import annotations

import fnmatch
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.export.files import atomic_write_bytes
from prunekit.export.storage.codec import check_values, decode_codes, encode_matrix, parse_encoding
from prunekit.layers import is_hf_conv1d
from prunekit.masks import has_masks

FORMAT_NAME = "prunekit-compressed"
FORMAT_VERSION = 1
SEP = "::"


def _encodable(model: nn.Module) -> dict[str, nn.Module]:
    """state_dict key -> owning module, for float parameters with ndim >= 2."""
    out: dict[str, nn.Module] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.ndim >= 2 and p.is_floating_point():
                out[f"{mname}.{pname}" if mname else pname] = module
    return out


def _matrix(t: Tensor, transposed: bool) -> Tensor:
    return t.t() if transposed else t.reshape(t.shape[0], -1)


def _key(t: Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _resolve_encodings(encodings: Mapping[str, str] | None, names: list[str]) -> dict[str, str | tuple[int, int]]:
    chosen: dict[str, str | tuple[int, int]] = {}
    for glob, text in (encodings or {}).items():
        hits = [n for n in names if fnmatch.fnmatchcase(n, glob)]
        if not hits:
            raise PrunekitError(
                f"encodings key {glob!r} matches no encodable tensor; they are e.g. {', '.join(names[:3])}"
            )
        for h in hits:
            chosen[h] = parse_encoding(text, h)
    return chosen


def build_file(model: nn.Module, *, values: str = "fp32", group_size: int | None = None,
               encodings: Mapping[str, str] | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and `__metadata__` of a compressed file for `model` (nothing written)."""
    values = check_values(values)
    if group_size is not None and values in ("fp32", "fp16"):
        raise PrunekitError(f"group_size {group_size!r} applies to int8 / int4 values only, not {values!r}")
    if has_masks(model):
        raise PrunekitError("model still carries masks: call prunekit.finalize(model) before save_compressed")
    owners = _encodable(model)
    forced = _resolve_encodings(encodings, list(owners))
    tensors: dict[str, Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if t.numel() and _key(t) in seen:
            entries[name] = {"alias_of": seen[_key(t)]}
            continue
        if t.numel():
            seen[_key(t)] = name
        if name not in owners or t.numel() == 0:
            tensors[name] = t.contiguous()  # raw: stored under its own name, no entry
            continue
        transposed = is_hf_conv1d(owners[name]) and t.ndim == 2
        enc = encode_matrix(_matrix(t, transposed), values, group_size, forced.get(name, "auto"), f"tensor {name!r}")
        for part, data in enc.parts.items():
            tensors[f"{name}{SEP}{part}"] = data
        entries[name] = {**enc.entry, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                         "transposed": transposed}
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
            "tensors": json.dumps(entries, separators=(",", ":"))}
    return tensors, meta


def save_compressed(model: nn.Module, path: str | Path, *, values: str = "fp32", group_size: int | None = None,
                    encodings: Mapping[str, str] | None = None) -> Path:
    """Write `model` (finalized) as one compressed safetensors file, atomically (temp file + rename).

    Args:
        values: "fp32", "fp16", "int8" or "int4": how encoded tensors' values are stored (INT: symmetric, fp32 scales).
        group_size: input columns per INT scale (must divide every encoded matrix's columns); None = per row.
        encodings: tensor-name globs -> "dense", "bitmask", "auto" or "N:M" (e.g. "2:4", checked: a group with more
            than N non-zeros raises). Unlisted tensors use "auto": the smallest of dense, bitmask and the N:M
            patterns (M = 4, 8) the tensor follows.
    """
    from safetensors.torch import save

    tensors, meta = build_file(model, values=values, group_size=group_size, encodings=encodings)
    path = Path(path)
    if path.is_dir():
        raise PrunekitError(f"{str(path)!r} is a folder; give a file path such as {str(path / 'model.safetensors')!r}")
    if not path.parent.is_dir():
        raise PrunekitError(f"folder {str(path.parent)!r} does not exist")
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(tensor header, format entries, header bytes incl. the 8-byte length) of a compressed file; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise PrunekitError(f"{str(path)!r} is not a file")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise PrunekitError(f"{path}: not a valid safetensors file (bad header length)")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
        meta = header.pop("__metadata__", None) or {}
    except (ValueError, AttributeError):
        raise PrunekitError(f"{path}: not a valid safetensors file (header is not JSON)") from None
    if meta.get("format") != FORMAT_NAME:
        raise PrunekitError(
            f"{path}: not a prunekit compressed file (metadata format is {meta.get('format')!r}, expected "
            f"{FORMAT_NAME!r}); load plain safetensors with prunekit.specs.load_weights"
        )
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise PrunekitError(
            f"{path}: compressed format version {meta.get('format_version')!r} is not supported (this prunekit "
            f"reads version {FORMAT_VERSION})"
        )
    try:
        entries = json.loads(meta["tensors"])
    except (KeyError, ValueError):
        raise PrunekitError(f"{path}: corrupt compressed file (metadata 'tensors' is missing or not JSON)") from None
    return header, entries, 8 + n


def _read_tensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise PrunekitError(f"{path}: corrupt safetensors data ({str(exc).splitlines()[0]})") from None


def _parts(tensors: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    prefix = name + SEP
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def read_compressed(path: str | Path) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]], dict[str, Any]]:
    """(decoded state dict, entries, {name: (codes, scales, bits)} for INT entries) of a compressed file."""
    path = Path(path)
    _, entries, _ = read_header(path)
    tensors = _read_tensors(path)
    state: dict[str, Tensor] = {k: v for k, v in tensors.items() if SEP not in k and k not in entries}  # raw
    quant: dict[str, Any] = {}
    for name, entry in entries.items():
        if "alias_of" in entry:
            continue
        try:
            codes, scales = decode_codes(entry, _parts(tensors, name))
            dtype = getattr(torch, entry["dtype"])
            matrix = codes.to(dtype) if scales is None else _dequant(codes, scales, dtype)
            shape = [int(s) for s in entry["shape"]]
            state[name] = (matrix.t() if entry["transposed"] else matrix).reshape(shape).contiguous()
            if scales is not None:
                quant[name] = (codes, scales, 8 if entry["values"] == "int8" else 4)
        except PrunekitError as exc:
            raise PrunekitError(f"{path}: corrupt entry {name!r} ({exc})") from None
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise PrunekitError(f"{path}: corrupt entry {name!r} ({type(exc).__name__}: {exc})") from None
    for name, entry in entries.items():
        if "alias_of" in entry:
            if entry["alias_of"] not in state:
                raise PrunekitError(f"{path}: corrupt entry {name!r} (alias of missing {entry['alias_of']!r})")
            state[name] = state[entry["alias_of"]]
    return state, entries, quant


def _dequant(codes: Tensor, scales: Tensor, dtype: torch.dtype) -> Tensor:
    from prunekit.quant import dequantize

    return dequantize(codes, scales).to(dtype)


def load_compressed(path: str | Path, model: nn.Module, *, quant_linear: bool = False) -> nn.Module:
    """Load a compressed file into `model` (same architecture, already at the pruned shapes) in place; return it.

    Every tensor comes back exactly as encoded: fp values as stored, INT values as `codes * scale` (fp32, then the
    original dtype). With `quant_linear=True`, each nn.Linear whose weight was stored as INT8 / INT4 becomes a
    `prunekit.quant.QuantLinear` holding the codes and scales themselves.
    """
    path = Path(path)
    if has_masks(model):
        raise PrunekitError("model carries masks: call prunekit.finalize(model) before load_compressed")
    state, _, quant = read_compressed(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or extra or wrong:
        bits = [f"{len(v)} {what} (e.g. {', '.join(v[:3])})" for v, what in
                ((missing, "tensors missing from the file"), (extra, "tensors the model lacks"),
                 (wrong, "shape mismatches, file vs model")) if v]
        raise PrunekitError(f"{path} does not fit the model: {'; '.join(bits)}")
    model.load_state_dict(state, strict=True)
    if quant_linear:
        _swap_quant_linear(model, quant)
    return model


def _swap_quant_linear(model: nn.Module, quant: Mapping[str, Any]) -> None:
    from prunekit.quant import QuantLinear

    for name, (codes, scales, bits) in quant.items():
        mname, _, pname = name.rpartition(".")
        module = model.get_submodule(mname) if mname else model
        if type(module) is not nn.Linear or pname != "weight":
            continue
        q = QuantLinear(module.in_features, module.out_features, bits,
                        module.in_features // scales.shape[1], module.bias is not None, module.weight.dtype)
        q.set_codes(codes, scales)
        if module.bias is not None:
            q.bias.data.copy_(module.bias.detach())
        parent_name, _, child = mname.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, q)


def file_size(path: str | Path) -> int:
    """Bytes on disk."""
    return os.path.getsize(path)
