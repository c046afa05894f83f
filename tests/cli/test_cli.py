"""The CLI: every user mistake is one line on stderr, exit code 2, nothing written; the happy paths work."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prunekit.cli.main import main

HERE = Path(__file__).parent
RECIPE = """stages:
  - method: magnitude
    sparsity: 0.5
    scope: global
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(RECIPE)
    return p


@pytest.fixture(autouse=True)
def _toy_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def _run_error(capsys, argv: list[str], match: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err  # exactly one line
    assert err.startswith("prunekit: error: ")
    assert "Traceback" not in err
    assert match in err, err
    return err


def test_prune_end_to_end(tmp_path, recipe, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(recipe), "--model", "toy_models:mlp", "--out", str(out), "--input-shape", "2,16"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["layer_sparsity.png", "model.safetensors", "recipe.yaml", "report.json", "report.md", "summary.png"]
    state = load_file(str(out / "model.safetensors"))
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}  # plain keys, no masks
    assert (state["2.weight"] == 0).float().mean().item() == pytest.approx(0.5, abs=1e-9)  # only layer 2 is prunable
    assert (state["0.weight"] == 0).sum() == 0 and (state["4.weight"] == 0).sum() == 0  # first/last protected
    report = json.loads((out / "report.json").read_text())
    assert {m["name"] for m in report["metrics"]} >= {"latency_p50_ms", "file_bytes", "params", "nonzeros"}
    assert "min_density" in (out / "recipe.yaml").read_text()  # resolved recipe written
    # `prunekit report DIR` prints it back
    assert main(["report", str(out)]) == 0
    assert "2.weight" not in capsys.readouterr().err


def test_existing_out_dir_is_refused_then_overwritten(tmp_path, recipe, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["prune", str(recipe), "--model", "toy_models:mlp", "--out", str(out), "--input-shape", "2,16"]
    _run_error(capsys, args, "already exists; pass --overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert main([*args, "--overwrite", "--no-measure"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folders left


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("stages:\n  - method: magnitude\n    sparsity: 1.5\n", "key 'sparsity': 1.5 is invalid"),
        ("stages:\n  - method: foo\n", "unknown method 'foo'"),
        ("stages:\n  - method: magnitude\n    pattern: '3:2'\n", "'3:2'"),
        ("stages: [", "not valid YAML"),
    ],
)
def test_bad_recipes(tmp_path, capsys, body, match):
    p = tmp_path / "r.yaml"
    p.write_text(body)
    out = tmp_path / "out"
    _run_error(capsys, ["prune", str(p), "--model", "toy_models:mlp", "--out", str(out)], match)
    assert not out.exists()
    _run_error(capsys, ["validate", str(p)], match)


def test_bad_flags_and_specs(tmp_path, recipe, capsys):
    out = str(tmp_path / "out")
    _run_error(capsys, ["prune", str(recipe), "--out", out], "the following arguments are required: --model")
    _run_error(capsys, ["prune", str(recipe), "--model", "toy_models:mlp", "--out", out, "--bogus"], "unrecognized arguments: --bogus")
    _run_error(capsys, ["prune", str(tmp_path / "none.yaml"), "--model", "toy_models:mlp", "--out", out], "recipe file not found")
    _run_error(capsys, ["prune", str(recipe), "--model", "nosuchmodule:f", "--out", out], "cannot import module 'nosuchmodule'")
    _run_error(capsys, ["prune", str(recipe), "--model", "toy_models:not_a_model", "--out", out], "returned str, not a torch.nn.Module")
    _run_error(capsys, ["prune", str(recipe), "--model", "missing_dir", "--out", out], "model spec 'missing_dir' not found")
    _run_error(capsys, ["prune", str(recipe), "--model", "toy_models:mlp", "--out", out, "--data", "digitz"], "unknown data spec 'digitz'. Did you mean: digits?")
    _run_error(capsys, ["prune", str(recipe), "--model", "toy_models:mlp", "--out", out, "--input-shape", "a,b"], "is not a shape")
    _run_error(capsys, ["frobnicate"], "invalid choice: 'frobnicate'")
    _run_error(capsys, ["report", str(tmp_path)], "has no report.json")
    assert not Path(out).exists()


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoints_are_never_unpickled(tmp_path, recipe, capsys):
    out = str(tmp_path / "out")
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"w": _Evil()}))
    before = bad.read_bytes()
    err = _run_error(capsys, ["prune", str(recipe), "--model", "toy_models:mlp", "--out", out, "--checkpoint", str(bad)],
                     "not a safetensors or weights-only torch checkpoint")
    assert "unpickled!" not in capsys.readouterr().out + err
    assert bad.read_bytes() == before  # the user's file is untouched
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not really")
    _run_error(capsys, ["prune", str(recipe), "--model", "toy_models:mlp", "--out", out, "--checkpoint", str(junk)],
               "not a valid safetensors file")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"x": torch.zeros(2)}, str(wrong))
    _run_error(capsys, ["prune", str(recipe), "--model", "toy_models:mlp", "--out", out, "--checkpoint", str(wrong)],
               "does not fit the model")
    assert not Path(out).exists()


def test_checkpoint_weights_are_loaded(tmp_path, recipe):
    from toy_models import mlp

    model = mlp()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.25)
    ckpt = tmp_path / "w.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "out"
    args = ["prune", str(recipe), "--model", "toy_models:mlp", "--out", str(out), "--checkpoint", str(ckpt),
            "--input-shape", "2,16", "--no-measure"]
    assert main(args) == 0
    state = load_file(str(out / "model.safetensors"))
    assert torch.all(state["0.weight"] == 0.25)


def test_validate_and_list(tmp_path, recipe, capsys):
    assert main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "min_density: 0.02" in out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("magnitude", "random", "unstructured", "n:m", "block", "l1", "digits", "shakespeare-genre"):
        assert name in out


def test_console_script_version_and_error_exit_code(tmp_path):
    exe = Path(sys.executable).with_name("prunekit")
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout.startswith("prunekit ")
    res = subprocess.run([str(exe), "validate", str(tmp_path / "nope.yaml")], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"prunekit: error: recipe file not found: {tmp_path / 'nope.yaml'}"]


def test_structured_prune_writes_a_replayable_plan(tmp_path):
    from prunekit.methods.structured import PruningPlan, apply_plan
    from toy_models import mlp

    recipe = tmp_path / "s.yaml"
    recipe.write_text("stages:\n  - method: structured\n    target: {width_ratio: 0.5}\n")
    out = tmp_path / "out"
    assert main(["prune", str(recipe), "--model", "toy_models:mlp", "--out", str(out), "--input-shape", "2,16"]) == 0
    plan = PruningPlan.from_json((out / "plan.json").read_text())
    rebuilt = mlp()
    apply_plan(rebuilt, plan)
    state = load_file(str(out / "model.safetensors"))
    assert state["0.weight"].shape[0] < 32  # hidden neurons really removed
    rebuilt.load_state_dict(state)  # shapes of the replayed model match the saved weights
    report = json.loads((out / "report.json").read_text())
    assert any(n.startswith("verify: ok") for n in report["stages"][0]["notes"])
    params = {m["name"]: m for m in report["metrics"]}["params"]
    assert params["after"] < params["before"]
