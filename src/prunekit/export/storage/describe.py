"""describe(path): per-tensor format and theoretical vs stored bytes of a compressed file, read from its header only.

theoretical bytes = exact payload bits / 8 of the chosen encoding (no byte padding, no header); stored bytes = the
bytes of the tensor's parts in the file (from the safetensors offsets); the file adds the JSON header.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prunekit.export.storage.io import SEP, read_header

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class TensorRow:
    """One state_dict key: how it is stored and what it costs."""

    name: str
    shape: list[int]
    encoding: str  # "dense", "bitmask", "N:M" (e.g. "2:4"), "raw", or "alias of NAME"
    values: str  # fp32 / fp16 / int8 / int4, or the raw dtype
    nnz: int | None
    theoretical_bytes: float
    stored_bytes: int


@dataclass(frozen=True)
class StorageDescription:
    """The rows plus file totals."""

    path: str
    file_bytes: int
    header_bytes: int
    rows: list[TensorRow] = field(default_factory=list)

    @property
    def theoretical_bytes(self) -> float:
        return sum(r.theoretical_bytes for r in self.rows)

    @property
    def stored_bytes(self) -> int:
        return sum(r.stored_bytes for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "file_bytes": self.file_bytes, "header_bytes": self.header_bytes,
                "theoretical_bytes": self.theoretical_bytes, "stored_bytes": self.stored_bytes,
                "rows": [asdict(r) for r in self.rows]}

    def table(self) -> str:
        """Markdown table, one row per tensor, then the totals."""
        lines = ["| tensor | shape | encoding | values | non-zeros | theoretical B | stored B |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            nnz = "" if r.nnz is None else f"{r.nnz}"
            lines.append(f"| {r.name} | {'x'.join(map(str, r.shape))} | {r.encoding} | {r.values} | {nnz} | "
                         f"{r.theoretical_bytes:,.1f} | {r.stored_bytes:,} |")
        lines.append(f"| **total** | | | | | {self.theoretical_bytes:,.1f} | {self.stored_bytes:,} "
                     f"(file {self.file_bytes:,}, header {self.header_bytes:,}) |")
        return "\n".join(lines)


def _nbytes(info: dict[str, Any]) -> int:
    start, end = info["data_offsets"]
    return int(end) - int(start)


def describe(path: str | Path) -> StorageDescription:
    """Per-tensor encoding, non-zeros, theoretical and stored bytes of a compressed file (header only)."""
    path = Path(path)
    header, entries, header_bytes = read_header(path)
    rows = []
    for name, info in header.items():
        if SEP not in name and name not in entries:
            theory = float(math.prod(info.get("shape", [])) * _DTYPE_BYTES.get(info.get("dtype"), 0))
            rows.append(TensorRow(name, list(info.get("shape", [])), "raw", str(info.get("dtype", "?")), None,
                                  theory, _nbytes(info)))
    for name, entry in entries.items():
        if "alias_of" in entry:
            rows.append(TensorRow(name, [], f"alias of {entry['alias_of']}", "", None, 0.0, 0))
            continue
        stored = sum(_nbytes(v) for k, v in header.items() if k.startswith(name + SEP))
        enc = f"{entry['n']}:{entry['m']}" if entry["encoding"] == "nm" else entry["encoding"]
        rows.append(TensorRow(name, list(entry["shape"]), enc, entry["values"], int(entry["nnz"]),
                              float(entry["theoretical_bytes"]), stored))
    rows.sort(key=lambda r: r.name)
    return StorageDescription(str(path), os.path.getsize(path), header_bytes, rows)
