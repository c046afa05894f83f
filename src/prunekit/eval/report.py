"""`PruneReport`: the one result every pruning job ends in, and what it really saved, measured.

A report holds per-layer rows (shape, params, non-zeros, sparsity, pattern, status and why a layer was skipped,
MACs), totals, the recipe stages that ran, and before/after metric pairs (accuracy, latency, peak memory, file size,
params, non-zeros, MACs). It round-trips through JSON exactly (`to_dict` / `from_dict`), saves as report.json,
report.md and two PNG plots (each written to a temp file in the same folder, then `os.replace`d), and prints as rich
tables. `build_report` makes one from a model and the pruning code's per-layer info.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit._version import __version__
from prunekit.errors import PrunekitError, choices_text, suggest
from prunekit.eval._savings import savings_lines
from prunekit.eval.counting import MATMUL_SUFFIX, ModelCount, count_model, count_params

STATUSES = ("pruned", "skipped", "untouched")
"""Layer statuses: pruned by a stage, matched but skipped (with a reason), or not targeted at all."""

SCHEMA_VERSION = 1
REPORT_FILES = ("report.json", "report.md", "layer_sparsity.png", "summary.png")
SCHEDULE_FILE = "schedule.png"  # also written when a gradual stage recorded its sparsity history
"""The files `PruneReport.save` writes."""


@dataclass(frozen=True)
class LayerRow:
    """One layer of the report (or one module's activation matmuls, with name ending in '::matmul')."""

    name: str
    type: str
    shape: tuple[int, ...] | None
    params: int
    nonzeros: int
    sparsity: float
    pattern: str | None = None
    status: str = "untouched"
    reason: str | None = None
    macs: int | None = None
    effective_macs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {**asdict(self), "shape": list(self.shape) if self.shape is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerRow:
        """Inverse of `to_dict`."""
        _check_keys(cls, data, "layer row")
        shape = data.get("shape")
        return cls(**{**data, "shape": tuple(shape) if shape is not None else None})


@dataclass(frozen=True)
class Totals:
    """Whole-model totals (shared parameters once) and the same over the targeted (pruned) layers only."""

    params: int
    nonzeros: int
    sparsity: float
    targeted_params: int
    targeted_nonzeros: int
    targeted_sparsity: float
    macs: int | None = None
    effective_macs: int | None = None


@dataclass(frozen=True)
class MetricPair:
    """A metric measured before and after pruning; `ratio` = after / before, `delta` = after - before."""

    name: str
    before: float | None
    after: float | None
    unit: str = ""
    higher_is_better: bool = False
    note: str | None = None

    @property
    def ratio(self) -> float | None:
        """after / before, None when either is missing or before is 0."""
        if self.before is None or self.after is None or self.before == 0:
            return None
        return self.after / self.before

    @property
    def delta(self) -> float | None:
        """after - before, None when either is missing."""
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, with the derived `ratio` and `delta` for readers of the file."""
        return {**asdict(self), "ratio": self.ratio, "delta": self.delta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricPair:
        """Inverse of `to_dict` (derived fields are recomputed, not read)."""
        data = {k: v for k, v in data.items() if k not in ("ratio", "delta")}
        _check_keys(cls, data, "metric")
        return cls(**data)


def _check_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise PrunekitError(f"unknown {what} field {unknown[0]!r}; valid fields: {choices_text(valid)}")


@dataclass
class PruneReport:
    """What a pruning job did, per layer and in total, and what it saved, measured.

    Attributes:
        layers: per-layer rows in model order.
        totals: totals over all layers and over the pruned ones.
        metrics: before/after pairs (params, nonzeros, macs, latency_p50_ms, peak_memory_bytes, file_bytes, ...).
        stages: the resolved recipe stages that ran, as plain dicts.
        model_spec: how the model was given (a path, a timm name, `module:function`, or a dict), if known.
        target_sparsity: the requested sparsity (drawn as a line in the layer plot), if there is one.
        inputs: the example-input shapes MACs were counted on (whole batch).
        created: ISO-8601 UTC time the report was built, stored as text so it round-trips exactly.
        versions: prunekit and torch versions that made the report.
    """

    layers: list[LayerRow]
    totals: Totals
    metrics: list[MetricPair] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    model_spec: str | dict[str, Any] | None = None
    target_sparsity: float | None = None
    inputs: str | None = None
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # -- lookups -----------------------------------------------------------------------------------------------
    def metric(self, name: str) -> MetricPair | None:
        """The metric pair called `name`, or None."""
        return next((m for m in self.metrics if m.name == name), None)

    def add_metric(self, name: str, before: float | None, after: float | None, *, unit: str = "",
                   higher_is_better: bool = False, note: str | None = None) -> MetricPair:
        """Add (or replace, by name) a before/after metric and return it."""
        pair = MetricPair(name, before, after, unit, higher_is_better, note)
        self.metrics = [m for m in self.metrics if m.name != name] + [pair]
        return pair

    @property
    def skipped(self) -> list[LayerRow]:
        """Rows that were matched but skipped, each with its reason."""
        return [row for row in self.layers if row.status == "skipped"]

    def savings_summary(self, tolerance: float = 0.05) -> list[str]:
        """Plain-English lines of what was really saved, derived from the measured metrics.

        Args:
            tolerance: relative change treated as noise (0.05: within +-5% is "no measurable change").
        """
        t = self.totals
        pruned = sum(1 for row in self.layers if row.status == "pruned")
        if pruned:
            lines = [f"sparsity: {t.targeted_sparsity:.1%} of the parameters in {pruned} pruned layer(s) are zero, "
                     f"{t.sparsity:.1%} of all parameters"]
        else:
            lines = [f"sparsity: {t.sparsity:.1%} of all parameters are zero (no layer is marked pruned)"]
        if self.skipped:
            lines.append(f"{len(self.skipped)} layer(s) skipped, each with its reason in the layer table")
        return lines + savings_lines({m.name: m for m in self.metrics}, tolerance)

    # -- serialisation -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; `from_dict(to_dict())` gives an equal report."""
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "versions": dict(self.versions),
            "model_spec": self.model_spec,
            "inputs": self.inputs,
            "target_sparsity": self.target_sparsity,
            "totals": asdict(self.totals),
            "metrics": [m.to_dict() for m in self.metrics],
            "stages": [dict(s) for s in self.stages],
            "layers": [row.to_dict() for row in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneReport:
        """Build a report from `to_dict` output; raises `PrunekitError` for unknown keys or a newer schema."""
        _check_keys(cls, data, "report")
        version = data.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise PrunekitError(f"report schema_version {version!r} is not supported; this prunekit reads <= "
                                f"{SCHEMA_VERSION}")
        _check_keys(Totals, data["totals"], "totals")
        return cls(
            layers=[LayerRow.from_dict(row) for row in data.get("layers", [])],
            totals=Totals(**data["totals"]),
            metrics=[MetricPair.from_dict(m) for m in data.get("metrics", [])],
            stages=[dict(s) for s in data.get("stages", [])],
            model_spec=data.get("model_spec"),
            target_sparsity=data.get("target_sparsity"),
            inputs=data.get("inputs"),
            created=data.get("created", ""),
            versions=dict(data.get("versions", {})),
            schema_version=version,
        )

    def to_json(self) -> str:
        """The report as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        """The report as Markdown (summary metrics, savings, layers, skipped layers with reasons, stages)."""
        from prunekit.eval._render import report_markdown

        return report_markdown(self)

    def save(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write report.json, report.md, layer_sparsity.png, summary.png (and schedule.png after a gradual stage).

        Each file is written to a temp file in the same folder and moved into place with `os.replace`, so a reader
        never sees a half-written file.

        Returns:
            The paths written, in `REPORT_FILES` order.
        """
        from prunekit.eval.plots import plot_layer_sparsity, plot_schedule, plot_summary

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        writers: list[Callable[[Path], None]] = [
            lambda p: p.write_text(self.to_json(), encoding="utf-8"),
            lambda p: p.write_text(self.to_markdown(), encoding="utf-8"),
            lambda p: plot_layer_sparsity(self, p),
            lambda p: plot_summary(self, p),
        ]
        written = [_write_atomic(out / name, writer) for name, writer in zip(REPORT_FILES, writers)]
        if any(st.get("sparsity_history") for st in self.stages):  # a gradual stage ran: its schedule as applied
            written.append(_write_atomic(out / SCHEDULE_FILE, lambda p: plot_schedule(self, p)))
        return written

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PruneReport:
        """Read `directory/report.json` written by `save`."""
        path = Path(directory) / "report.json"
        if not path.is_file():
            raise PrunekitError(
                f"no report.json in {str(directory)!r}; a report folder holds {', '.join(REPORT_FILES)}"
            )
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def print(self, console: Any = None, max_rows: int = 25, plan: Mapping[str, Any] | None = None) -> None:
        """Print metric, layer and savings tables with rich; big models show the `max_rows` largest layers.

        Structured stages add their mode lines and the resized layers; `plan` (a `PruningPlan.to_dict()`, e.g.
        plan.json) adds the channel / head counts per group, before -> after."""
        from prunekit.eval._render import print_report, print_structured

        print_report(self, console=console, max_rows=max_rows)
        print_structured(self, dict(plan) if plan is not None else None, console, max_rows=max_rows)


def _write_atomic(path: Path, writer: Callable[[Path], None]) -> Path:
    """Run `writer` on a temp file next to `path`, then move it into place (os.replace is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _check_layer_info(layer_info: Mapping[str, Mapping[str, Any]], names: list[str]) -> None:
    for name, info in layer_info.items():
        if name not in names:
            raise PrunekitError(f"layer_info names {name!r}, which is not a module with parameters."
                                f"{suggest(name, names)}")
        unknown = [k for k in info if k not in ("status", "reason", "pattern")]
        if unknown:
            raise PrunekitError(f"layer_info[{name!r}] has unknown key {unknown[0]!r}; valid keys: pattern, reason, "
                                f"status")
        if info.get("status", "untouched") not in STATUSES:
            raise PrunekitError(f"layer_info[{name!r}] status {info['status']!r} is not valid; valid statuses: "
                                f"{choices_text(STATUSES)}")


def count_metrics(before: ModelCount, after: ModelCount) -> list[MetricPair]:
    """Before/after pairs for params, non-zeros, MACs and effective MACs from two counts."""
    note = f"for inputs {after.inputs}" if after.inputs else None
    pairs = [MetricPair("params", before.params, after.params, "count"),
             MetricPair("nonzeros", before.nonzeros, after.nonzeros, "count")]
    if before.macs is not None and after.macs is not None:
        pairs += [MetricPair("macs", before.macs, after.macs, "MACs", note=note),
                  MetricPair("effective_macs", before.effective_macs, after.effective_macs, "MACs", note=note)]
    return pairs


def build_report(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    layer_info: Mapping[str, Mapping[str, Any]] | None = None,
    base_count: ModelCount | None = None,
    metrics: Iterable[MetricPair] = (),
    stages: Iterable[Mapping[str, Any]] = (),
    model_spec: str | dict[str, Any] | None = None,
    target_sparsity: float | None = None,
) -> PruneReport:
    """Count the (pruned) model and assemble a `PruneReport`.

    Args:
        model: the model after pruning.
        example_inputs: inputs for the MAC count (Tensor, tuple or dict); None leaves MACs empty.
        layer_info: module name -> {"status": "pruned"|"skipped"|"untouched", "reason": str, "pattern": str} from
            the pruning code; modules not named are "untouched".
        base_count: `count_model` of the model before pruning; adds params / nonzeros / MACs metric pairs.
        metrics: more measured pairs (accuracy, latency_p50_ms, peak_memory_bytes, file_bytes, ...).
        stages: the resolved recipe stages that ran.
        model_spec: how the model was given.
        target_sparsity: requested sparsity, drawn as a target line in the layer plot.

    Raises:
        PrunekitError: if layer_info names an unknown module, an unknown key or an invalid status.
    """
    count = count_model(model, example_inputs)
    layer_info = dict(layer_info or {})
    _check_layer_info(layer_info, [r.name for r in count.layers if not r.name.endswith(MATMUL_SUFFIX)])
    rows = []
    for c in count.layers:
        info = layer_info.get(c.name, {})
        rows.append(LayerRow(c.name, c.type, c.shape, c.params, c.nonzeros, c.sparsity, info.get("pattern"),
                             info.get("status", "untouched"), info.get("reason"), c.macs, c.effective_macs))
    pruned = [name for name, info in layer_info.items() if info.get("status") == "pruned"]
    t_params, t_nonzeros = count_params(model, pruned)
    totals = Totals(count.params, count.nonzeros, count.sparsity, t_params, t_nonzeros,
                    1.0 - t_nonzeros / t_params if t_params else 0.0, count.macs, count.effective_macs)
    report = PruneReport(
        layers=rows, totals=totals, stages=[dict(s) for s in stages], model_spec=model_spec,
        target_sparsity=target_sparsity, inputs=count.inputs,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        versions={"prunekit": __version__, "torch": torch.__version__},
    )
    if base_count is not None:
        report.metrics.extend(count_metrics(base_count, count))
    for pair in metrics:
        report.add_metric(pair.name, pair.before, pair.after, unit=pair.unit,
                          higher_is_better=pair.higher_is_better, note=pair.note)
    return report
