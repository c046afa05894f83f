"""`prunekit bench DIR` and `prunekit export DIR`: outputs written, and user mistakes as one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunekit.cli.main import main

HERE = Path(__file__).parent
STRUCTURED = "stages:\n  - method: structured\n    target: {width_ratio: 0.5}\n"


@pytest.fixture(autouse=True)
def _toy_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def pruned_dir(tmp_path: Path) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(STRUCTURED)
    out = tmp_path / "pruned"
    assert main(["prune", str(recipe), "--model", "toy_models:mlp", "--out", str(out), "--no-measure",
                 "--input-shape", "2,16"]) == 0
    return out


def _one_line_error(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("prunekit: error: ")
    for needle in needles:
        assert needle in err, err


def test_bench_writes_json_md_png(pruned_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", str(pruned_dir), "--input-shape", "4,16", "--runs", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "deploy on CPU" in printed and "output_cosine" in printed
    data = json.loads((out / "bench.json").read_text())
    names = [v["name"] for v in data["variants"]]
    assert names == ["dense", "pruned", "dense + INT8", "pruned + INT8"]
    dense, pruned = data["variants"][:2]
    assert pruned["params"] < dense["params"] and data["threads"] == 1 and data["batch_size"] == 4
    assert pruned["file_source"] == "files: model.safetensors"
    assert pruned["file_bytes"] == (pruned_dir / "model.safetensors").stat().st_size
    assert dense["metrics"]["output_cosine"] == pytest.approx(1.0)
    assert (out / "bench.md").read_text().startswith("# prunekit bench")
    assert (out / "bench.png").stat().st_size > 0


def test_bench_no_int8_and_baseline_spec(pruned_dir, tmp_path):
    out = tmp_path / "b2"
    assert main(["bench", str(pruned_dir), "--baseline", "toy_models:mlp", "--input-shape", "2,16", "--runs", "2",
                 "--no-int8", "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["dense", "pruned"]
    assert data["variants"][0]["note"] == "the baseline: --baseline toy_models:mlp"


def test_bench_user_mistakes(pruned_dir, tmp_path, capsys):
    _one_line_error(capsys, ["bench", str(tmp_path / "nope")], "has no report.json")
    _one_line_error(capsys, ["bench", str(pruned_dir), "--threads", "0"], "--threads must be >= 1, got 0")
    _one_line_error(capsys, ["bench", str(pruned_dir), "--baseline", "toy_models:nothing"], "has no attribute")
    _one_line_error(capsys, ["bench", str(pruned_dir), "--data", "digitz"], "unknown data spec 'digitz'")
    _one_line_error(capsys, ["bench", str(pruned_dir), "--input-shape", "x"], "--input-shape 'x'")
    _one_line_error(capsys, ["bench", str(pruned_dir), "--threads", "two"], "invalid int value: 'two'")


def test_export_onnx_and_torch_export(pruned_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import prunekit

    model = prunekit.load(pruned_dir)
    x = torch.randn(1, 16, generator=torch.Generator().manual_seed(0))
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(pruned_dir), "--format", "onnx", "--out", str(onnx_file), "--input-shape", "1,16"]) == 0
    assert "onnxruntime output check: max |diff|" in capsys.readouterr().out
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), model(x).detach(), atol=1e-5, rtol=1e-5)
    pt2 = tmp_path / "m.pt2"
    assert main(["export", str(pruned_dir), "--format", "torch-export", "--out", str(pt2), "--input-shape",
                 "1,16"]) == 0
    torch.testing.assert_close(torch.export.load(str(pt2)).module()(x), model(x), atol=1e-5, rtol=1e-5)

    _one_line_error(capsys, ["export", str(pruned_dir), "--format", "onnx", "--out", str(onnx_file),
                             "--input-shape", "1,16"], "exists (pass --overwrite")
    _one_line_error(capsys, ["export", str(pruned_dir), "--format", "onnx", "--out", str(pt2)], "must end in .onnx")
    _one_line_error(capsys, ["export", str(pruned_dir), "--format", "tflite", "--out", "x"], "invalid choice: 'tflite'")
    _one_line_error(capsys, ["export", str(pruned_dir), "--out", "x.onnx"], "--format")


def test_export_compressed_is_smaller_and_loads_back_exactly(tmp_path, capsys):
    import prunekit
    from prunekit.export.storage import describe, load_compressed

    recipe = tmp_path / "m.yaml"
    recipe.write_text("stages:\n  - method: magnitude\n    sparsity: 0.8\n")
    pruned_dir = tmp_path / "masked"
    assert main(["prune", str(recipe), "--model", "toy_models:wide_mlp", "--out", str(pruned_dir), "--no-measure",
                 "--input-shape", "2,16"]) == 0
    target = tmp_path / "m.safetensors"
    assert main(["export", str(pruned_dir), "--format", "compressed", "--out", str(target), "--input-shape",
                 "1,16"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "values fp32" in out and "max |output diff| 0 " in out
    model = prunekit.load(pruned_dir)
    dense_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert describe(target).file_bytes < dense_bytes  # the zeros are not stored
    again = load_compressed(target, prunekit.load(pruned_dir))
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again(x), model(x))
    int8 = tmp_path / "q.safetensors"
    assert main(["export", str(pruned_dir), "--format", "compressed", "--values", "int8", "--out", str(int8),
                 "--input-shape", "1,16"]) == 0
    assert describe(int8).file_bytes < describe(target).file_bytes
    _one_line_error(capsys, ["export", str(pruned_dir), "--format", "compressed", "--out", str(tmp_path / "m.onnx"),
                             "--input-shape", "1,16"], "must end in .safetensors for --format compressed")
    _one_line_error(capsys, ["export", str(pruned_dir), "--format", "compressed", "--out", str(target),
                             "--input-shape", "1,16"], "exists (pass --overwrite")
