"""What `sparsify` measured and decided: one row per candidate layer, plus the whole-model check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class LayerChoice:
    """One Linear / 1x1 conv: its sparsity, the time of each kernel at the shape it saw, and the kernel kept.

    `timings_ms` is empty when the layer was not timed (`reason` says why); `choice` is "dense" or a sparse label
    ("csr", "bsr 8x8"); `speedup` is dense time / chosen time (1.0 when dense is kept).
    """

    name: str
    layer: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    sparsity: float
    timings_ms: dict[str, float]
    choice: str
    speedup: float
    reason: str


@dataclass
class SparsifyReport:
    """Per-layer choices and the end-to-end check (dense vs sparsified model on the example inputs)."""

    layers: list[LayerChoice]
    margin: float
    threads: int
    model_dense_ms: float | None = None
    model_sparse_ms: float | None = None
    slower_overall: bool | None = None
    max_abs_diff: float | None = None
    reverted: bool = False
    messages: list[str] = field(default_factory=list)

    @property
    def swapped(self) -> list[LayerChoice]:
        """The layers now running a sparse kernel (none after a revert)."""
        return [] if self.reverted else [c for c in self.layers if c.choice != "dense"]

    @property
    def model_speedup(self) -> float | None:
        """Dense / sparsified end-to-end time, when the whole-model check ran."""
        if self.model_dense_ms is None or not self.model_sparse_ms:
            return None
        return self.model_dense_ms / self.model_sparse_ms

    def revert(self, model: nn.Module) -> int:
        """Put the dense layers back into `model` (exact), mark the report reverted; returns the layers reverted."""
        from prunekit.runtime.modules import revert

        count = revert(model)
        self.reverted = True
        return count

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        data = asdict(self)
        data["model_speedup"] = self.model_speedup
        return data

    def to_markdown(self) -> str:
        """A table: layer, type, weight shape, input shape, sparsity, each kernel's time, choice and speedup."""
        kinds = sorted({k for c in self.layers for k in c.timings_ms}, key=lambda k: (k != "dense", k))
        head = "| layer | type | weight | input | sparsity | " + " | ".join(f"{k} ms" for k in kinds)
        lines = [head + " | choice | speedup |", "|" + "---|" * (7 + len(kinds))]
        for c in self.layers:
            times = " | ".join(f"{c.timings_ms[k]:.3f}" if k in c.timings_ms else "-" for k in kinds)
            choice = c.choice if c.timings_ms else f"dense ({c.reason})"
            lines.append(
                f"| {c.name} | {c.layer} | {'x'.join(map(str, c.weight_shape))} | "
                f"{'x'.join(map(str, c.input_shape)) or '-'} | {c.sparsity:.1%} | {times} | {choice} | "
                f"{c.speedup:.2f}x |"
            )
        lines.append("")
        lines.extend(self.summary_lines())
        return "\n".join(lines)

    def summary_lines(self) -> list[str]:
        """One line on the whole model, then the messages (slower overall, reverted, skipped layers)."""
        n = len(self.swapped)
        out = [f"{n} of {len(self.layers)} layers run a sparse kernel ({self.threads} thread(s), margin "
               f"{self.margin:.0%})."]
        if self.model_speedup is not None:
            out.append(f"Whole model: dense {self.model_dense_ms:.2f} ms, sparsified {self.model_sparse_ms:.2f} ms "
                       f"({self.model_speedup:.2f}x), outputs max |diff| {self.max_abs_diff:.1e}.")
        return out + list(self.messages)
