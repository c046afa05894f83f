"""`prunekit report DIR` on a structured result: mode lines, per-group channel counts (plan.json), resized layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunekit.cli.main import main

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _toy_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def _prune(tmp_path: Path, body: str) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(body)
    out = tmp_path / "out"
    args = ["prune", str(recipe), "--model", "toy_models:mlp", "--out", str(out), "--input-shape", "2,16", "--no-measure"]
    assert main(args) == 0
    return out


def _report_text(capsys, out: Path) -> str:
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    return " ".join(capsys.readouterr().out.split())  # rich wraps long cells; compare on collapsed whitespace


def test_report_shows_channel_counts_before_after(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = _prune(tmp_path, "stages:\n  - method: structured\n    target: {width_ratio: 0.5}\n")
    text = _report_text(capsys, out)
    plan = json.loads((out / "plan.json").read_text())
    groups = plan["steps"][0]["groups"]
    assert "Channel / head counts per group (plan.json, 2 changed)" in text and len(groups) == 2
    for g in groups:  # every changed group, with its counts from the plan
        assert f"1 │ {g['name']} │ {g['channels_before']} │ {g['channels_after']} │ 50% │ channel" in text
    report = json.loads((out / "report.json").read_text())
    resized = [r for r in report["layers"] if r["reason"] and " -> " in r["reason"]]
    assert f"Resized layers ({len(resized)})" in text
    assert "0 │ Linear │ out features 32 -> 16" in text and "4 │ Linear │ in features 32 -> 16" in text
    assert "mode: per-layer counts" in text and "target width_ratio 0.5: reached 0.5000" in text
    assert "verify: ok" in text
    md = (out / "report.md").read_text()
    assert "## Structured pruning" in md and "| 2 | Linear | out features 32 -> 16; in features 32 -> 16 |" in md


def test_mask_pruned_report_has_no_structured_section(tmp_path, capsys):
    out = _prune(tmp_path, "stages:\n  - method: magnitude\n    sparsity: 0.5\n")
    text = _report_text(capsys, out)
    assert "Structured pruning" not in text and "Resized layers" not in text
    assert "Structured pruning" not in (out / "report.md").read_text()


def test_report_names_a_broken_plan(tmp_path, capsys):
    out = _prune(tmp_path, "stages:\n  - method: structured\n    target: {width_ratio: 0.5}\n")
    (out / "plan.json").write_text("[1, 2")
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plan.json: pruning plan is not valid JSON" in err
