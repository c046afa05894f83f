"""A recipe whose later stage removes modules an earlier stage reported on (wanda, then llm_depth) still reports."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo import build_llama_gqa  # noqa: E402

import prunekit  # noqa: E402


def test_mask_stage_then_block_removal_reports_the_surviving_layers():
    model, inputs = build_llama_gqa()
    recipe = {"stages": [
        {"method": "wanda", "sparsity": 0.5, "calibration": {"nsamples": 2, "seq_len": 8}},
        {"method": "llm_depth", "drop": 1, "calibration": {"nsamples": 2, "seq_len": 8}},
    ]}
    report = prunekit.prune(model, recipe, example_inputs=inputs)
    assert len(model.model.layers) == 1
    names = {n for n, _ in model.named_modules()}
    assert all(row.name.split("::")[0] in names for row in report.layers)  # no row names a removed block
    assert any(row.status == "pruned" for row in report.layers)
    assert any("no longer exist after this stage" in n for n in report.stages[-1]["notes"])
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_block_removal_after_a_mask_stage_still_checks_the_config_rebuild():
    model, inputs = build_llama_gqa()
    recipe = {"stages": [
        {"method": "magnitude", "sparsity": 0.5},
        {"method": "llm_depth", "drop": 1, "calibration": {"nsamples": 2, "seq_len": 8}},
    ]}
    report = prunekit.prune(model, recipe, example_inputs=inputs)
    notes = "\n".join(report.stages[-1]["notes"])
    assert "from_pretrained rebuilds these shapes" in notes and "WARNING" not in notes


def test_every_stage_reports_its_time_and_nm_weights_are_checked():
    model, inputs = build_llama_gqa()
    report = prunekit.prune(model, {"stages": [{"method": "magnitude", "pattern": "2:4"}]}, example_inputs=inputs)
    notes = report.stages[-1]["notes"]
    assert report.stages[-1]["seconds"] >= 0 and report.stages[-1]["peak_rss_mib"] > 0  # process peak, not a delta
    assert any(n.startswith("N:M check: all ") and "follow their pattern" in n for n in notes)


def test_a_weight_that_breaks_its_nm_pattern_is_an_error():
    import pytest

    from prunekit.api import _nm_check
    from prunekit.errors import PrunekitError

    layer = torch.nn.Linear(8, 4)
    with torch.no_grad():
        layer.weight[:, 1::2] = 0.0  # 2 nonzeros in every group of 4: valid 2:4
    model = torch.nn.Sequential(layer)
    info = {"0": {"status": "pruned", "pattern": "2:4"}}
    assert _nm_check(model, info) == "N:M check: all 1 pruned weight(s) follow their pattern"
    with torch.no_grad():
        layer.weight[0, 1] = 1.0  # 3 nonzeros in the first group
    with pytest.raises(PrunekitError, match=r"N:M check failed: 1 pruned weight\(s\) break their pattern, e.g. '0'"):
        _nm_check(model, info)
