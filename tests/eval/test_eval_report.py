"""PruneReport: build, JSON round trip, atomic save/load, honest savings wording, rich printing and plots."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from rich.console import Console
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.eval import MetricPair, PruneReport, build_report, count_model
from prunekit.eval import plots as plots_module
from prunekit.eval.report import REPORT_FILES, LayerRow, Totals


def _pruned_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    x = torch.randn(4, 8)
    base = count_model(model, x)
    with torch.no_grad():
        model[2].weight[:, :12] = 0.0  # 75% of layer 2's weights
    info = {
        "0": {"status": "skipped", "reason": "first layer (protected)"},
        "2": {"status": "pruned", "pattern": "unstructured"},
        "4": {"status": "skipped", "reason": "ignored by 're:.*classifier.*|4'"},
    }
    return model, x, base, info


def _report(**kwargs):
    model, x, base, info = _pruned_mlp()
    return build_report(model, x, layer_info=info, base_count=base, stages=[{"method": "magnitude", "sparsity": 0.75}],
                        model_spec="tests:mlp", target_sparsity=0.75, **kwargs)


def test_build_report_rows_totals_and_count_metrics():
    report = _report(metrics=[MetricPair("accuracy", 0.9, 0.88, "", True, "held-out")])
    rows = {r.name: r for r in report.layers}
    assert rows["2"].status == "pruned" and rows["2"].pattern == "unstructured"
    assert rows["2"].sparsity == pytest.approx(192 / 272)  # 192 zero weights of 256 + 16 bias
    assert rows["0"].reason == "first layer (protected)"
    assert [r.name for r in report.skipped] == ["0", "4"]
    assert report.totals.targeted_params == 272 and report.totals.targeted_nonzeros == 272 - 192
    assert report.totals.params == (8 * 16 + 16) + 272 + (16 * 2 + 2)
    nonzeros = report.metric("nonzeros")
    assert nonzeros.before == report.totals.params and nonzeros.after == report.totals.params - 192
    assert report.metric("macs").ratio == 1.0 and report.metric("effective_macs").ratio < 1.0
    assert report.metric("accuracy").delta == pytest.approx(-0.02)
    assert report.versions["torch"] == torch.__version__ and "prunekit" in report.versions
    assert report.savings_summary()[0].startswith(f"sparsity: {192 / 272:.1%} of the parameters in 1 pruned layer(s)")


def test_json_round_trip_is_exact():
    report = _report(metrics=[MetricPair("latency_p50_ms", 1.2345678901234, 1.1, "ms", False, None)])
    again = PruneReport.from_dict(json.loads(report.to_json()))
    assert again == report
    assert again.to_json() == report.to_json()
    assert isinstance(again.layers[0].shape, tuple)


def test_from_dict_rejects_unknown_keys_and_newer_schemas():
    data = _report().to_dict()
    with pytest.raises(PrunekitError, match="unknown report field 'colour'"):
        PruneReport.from_dict({**data, "colour": "red"})
    with pytest.raises(PrunekitError, match="schema_version 99 is not supported"):
        PruneReport.from_dict({**data, "schema_version": 99})


def test_layer_info_mistakes_raise_with_choices():
    model, x, base, _ = _pruned_mlp()
    with pytest.raises(PrunekitError, match="status 'done' is not valid; valid statuses: pruned, skipped, untouched"):
        build_report(model, x, layer_info={"2": {"status": "done"}})
    with pytest.raises(PrunekitError, match="'3', which is not a module with parameters"):
        build_report(model, x, layer_info={"3": {"status": "pruned"}})
    with pytest.raises(PrunekitError, match="unknown key 'why'"):
        build_report(model, x, layer_info={"2": {"why": "x"}})


def test_save_writes_the_four_files_and_loads_back(tmp_path):
    report = _report()
    written = report.save(tmp_path / "out")
    assert [p.name for p in written] == list(REPORT_FILES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(REPORT_FILES)  # no temp files left
    assert PruneReport.load(tmp_path / "out") == report
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Skipped layers" in markdown and "first layer (protected)" in markdown
    assert "ignored by 're:.*classifier.*\\|4'" in markdown  # the pipe is escaped in the table
    for name in ("layer_sparsity.png", "summary.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_gradual_stage_adds_its_schedule_plot(tmp_path, monkeypatch):
    from prunekit.eval import plots

    model, x, base, info = _pruned_mlp()
    history = [[0, 0.0], [10, 0.4], [20, 0.7], [30, 0.75]]
    report = build_report(model, x, layer_info=info, base_count=base, target_sparsity=0.75,
                          stages=[{"method": "gmp", "sparsity": 0.75, "sparsity_history": history}])
    drawn = []
    real = plots.plot_schedule
    monkeypatch.setattr(plots, "plot_schedule", lambda r, p: (drawn.append(r.stages[0]["sparsity_history"]),
                                                               real(r, p)))
    written = report.save(tmp_path / "out")
    assert [p.name for p in written] == [*REPORT_FILES, "schedule.png"]
    assert (tmp_path / "out" / "schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn == [history]
    assert PruneReport.load(tmp_path / "out").stages[0]["sparsity_history"] == history
    assert not (tmp_path / "plain" / "schedule.png").exists()
    _report().save(tmp_path / "plain")
    assert not (tmp_path / "plain" / "schedule.png").exists()  # no gradual stage, no schedule plot


def test_a_failing_save_leaves_previous_files_whole_and_no_temp_files(tmp_path, monkeypatch):
    report = _report()
    report.save(tmp_path)
    old_json = (tmp_path / "report.json").read_text()

    def broken(report, path):
        with open(path, "wb") as f:
            f.write(b"half a png")
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots_module, "plot_summary", broken)
    changed = _report(metrics=[MetricPair("accuracy", 0.9, 0.5, "", True)])
    with pytest.raises(RuntimeError, match="disk full"):
        changed.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REPORT_FILES)
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"  # the old plot, not the half-written one
    assert (tmp_path / "report.json").read_text() != old_json  # earlier files were replaced whole


def test_load_of_a_folder_without_report_raises(tmp_path):
    with pytest.raises(PrunekitError, match="no report.json in"):
        PruneReport.load(tmp_path)


def _summary(*pairs):
    totals = Totals(100, 20, 0.8, 80, 0, 1.0, None, None)
    return PruneReport(layers=[], totals=totals, metrics=list(pairs)).savings_summary()


def _line(lines, start):
    return next(line for line in lines if line.startswith(start))


def test_savings_wording_follows_latency_numbers():
    assert "2.00x faster" in _line(_summary(MetricPair("latency_p50_ms", 10.0, 5.0, "ms")), "latency")
    same = _line(_summary(MetricPair("latency_p50_ms", 10.0, 10.0, "ms"),
                          MetricPair("nonzeros", 100, 20, "count"), MetricPair("params", 100, 100, "count")), "latency")
    assert "no real speedup: unstructured zeros run on dense kernels" in same
    assert "no real speedup" in _line(_summary(MetricPair("latency_p50_ms", 10.0, 10.3, "ms")), "latency")
    assert "slower" in _line(_summary(MetricPair("latency_p50_ms", 10.0, 20.0, "ms")), "latency")


def test_savings_wording_follows_size_and_count_numbers():
    lines = _summary(MetricPair("file_bytes", 4000, 4000, "bytes"), MetricPair("nonzeros", 100, 20, "count"))
    assert "no saving: zeros are stored densely; compressed storage turns sparsity into bytes (prunekit export --format compressed" in _line(lines, "file size")
    assert "5.00x fewer" in _line(lines, "non-zero weights")
    assert "2.00x smaller" in _line(_summary(MetricPair("file_bytes", 4000, 2000, "bytes")), "file size")
    structured = _summary(MetricPair("params", 100, 50, "count"), MetricPair("macs", 1000, 500, "MACs"))
    assert "2.00x fewer" in _line(structured, "parameters") and "2.00x fewer" in _line(structured, "dense MACs")
    assert "no baseline measured" in _line(_summary(MetricPair("file_bytes", None, 10, "bytes")), "file size")


def test_savings_wording_for_task_metrics():
    assert "worse" in _line(_summary(MetricPair("accuracy", 0.9, 0.8, "", True)), "accuracy")
    assert "better" in _line(_summary(MetricPair("perplexity", 20.0, 18.0, "", False)), "perplexity")
    assert "unchanged" in _line(_summary(MetricPair("accuracy", 0.9, 0.9, "", True)), "accuracy")


def test_print_is_compact_for_big_models():
    rows = [LayerRow(f"blocks.{i}.fc", "Linear", (8, 8), 64 + i, 32, 0.5, None, "pruned") for i in range(40)]
    report = PruneReport(layers=rows, totals=Totals(3000, 1500, 0.5, 3000, 1500, 0.5),
                         metrics=[MetricPair("nonzeros", 3000, 1500, "count")])
    console = Console(record=True, width=200)
    report.print(console=console, max_rows=10)
    text = console.export_text()
    assert "... 30 more rows" in text
    assert "blocks.39.fc" in text and "blocks.0.fc" not in text  # the largest layers are shown
    assert "non-zero weights: 2.00x fewer" in text


def _png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    return struct.unpack(">II", header[16:24])


def test_layer_plot_grows_with_the_number_of_layers(tmp_path):
    def report_with(n):
        rows = [LayerRow(f"model.layers.{i}.mlp.down_proj", "Linear", (4, 4), 16, 4, 0.75, "2:4",
                         "pruned" if i % 5 else "skipped", None if i % 5 else "protected") for i in range(n)]
        return PruneReport(layers=rows, totals=Totals(16 * n, 4 * n, 0.75, 16 * n, 4 * n, 0.75), target_sparsity=0.75)

    plots_module.plot_layer_sparsity(report_with(5), tmp_path / "small.png")
    plots_module.plot_layer_sparsity(report_with(50), tmp_path / "big.png")
    assert _png_size(tmp_path / "big.png")[1] > 2 * _png_size(tmp_path / "small.png")[1]
    empty = PruneReport(layers=[], totals=Totals(0, 0, 0.0, 0, 0, 0.0))
    plots_module.plot_summary(empty, tmp_path / "empty.png")  # no metrics: still a valid PNG
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"
