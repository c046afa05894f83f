"""`prunekit.load(DIR)`: a folder written by `prunekit prune` rebuilt into the same model, without unpickling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import prunekit
from prunekit.cli.main import main
from prunekit.specs import load_pruned

HERE = Path(__file__).parent
STRUCTURED = "stages:\n  - method: structured\n    target: {width_ratio: 0.5}\n"
X = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))


def other_mlp() -> nn.Module:
    """Same layer names as toy_models.mlp, other widths: a plan made on mlp does not fit it."""
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))


@pytest.fixture(autouse=True)
def _toy_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def _prune_cli(tmp_path: Path, body: str, model: str, *extra: str) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(body)
    out = tmp_path / "out"
    assert main(["prune", str(recipe), "--model", model, "--out", str(out), "--no-measure", *extra]) == 0
    return out


def _pruned_in_memory(model: nn.Module, body: str, x) -> nn.Module:
    import yaml

    prunekit.prune(model, yaml.safe_load(body), x)
    prunekit.finalize(model)
    return model.eval()


def test_structured_module_function_round_trip(tmp_path):
    from toy_models import mlp

    out = _prune_cli(tmp_path, STRUCTURED, "toy_models:mlp", "--input-shape", "2,16")
    loaded = load_pruned(out)
    assert "plan.json" in loaded.rebuilt and "toy_models:mlp" in loaded.rebuilt
    model = prunekit.load(out)
    assert model[0].out_features < 32 and not model.training
    expected = _pruned_in_memory(mlp(), STRUCTURED, torch.randn(2, 16, generator=torch.Generator().manual_seed(0)))
    assert model[0].out_features == expected[0].out_features
    torch.testing.assert_close(model(X), expected(X), rtol=0, atol=0)


def test_checkpoint_given_at_prune_time_is_in_the_saved_weights(tmp_path):
    from toy_models import mlp

    torch.manual_seed(5)
    trained = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    ckpt = tmp_path / "trained.safetensors"
    save_file(trained.state_dict(), str(ckpt))
    out = _prune_cli(tmp_path, STRUCTURED, "toy_models:mlp", "--input-shape", "2,16", "--checkpoint", str(ckpt))
    model = prunekit.load(out)  # base architecture from the spec; its own (seed 0) weights are not used
    base = mlp()
    base.load_state_dict(trained.state_dict())
    expected = _pruned_in_memory(base, STRUCTURED, torch.randn(2, 16, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(model(X), expected(X), rtol=0, atol=0)
    assert not torch.equal(model(X), _pruned_in_memory(mlp(), STRUCTURED, torch.randn(2, 16))(X))


def test_mask_pruned_folder_loads_without_a_plan(tmp_path):
    out = _prune_cli(tmp_path, "stages:\n  - method: magnitude\n    sparsity: 0.5\n", "toy_models:mlp",
                     "--input-shape", "2,16")
    assert not (out / "plan.json").exists()
    model = prunekit.load(out)
    assert (model[2].weight == 0).float().mean().item() == pytest.approx(0.5)
    assert "plan.json" not in load_pruned(out).rebuilt


def test_errors_are_one_line_and_name_the_problem(tmp_path):
    with pytest.raises(prunekit.PrunekitError, match="pruned model folder .*nowhere' not found"):
        prunekit.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(prunekit.PrunekitError, match="has no model.safetensors"):
        prunekit.load(tmp_path / "empty")
    out = _prune_cli(tmp_path, STRUCTURED, "toy_models:mlp", "--input-shape", "2,16")

    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(out, copy)
        return copy

    bad_plan = broken("bad_plan")
    (bad_plan / "plan.json").write_text("{not json")
    with pytest.raises(prunekit.PrunekitError, match=r"plan.json: pruning plan is not valid JSON"):
        prunekit.load(bad_plan)
    (bad_plan / "plan.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(prunekit.PrunekitError, match="not a structured pruning plan"):
        prunekit.load(bad_plan)

    no_spec = broken("no_spec")
    (no_spec / "report.json").unlink()
    with pytest.raises(prunekit.PrunekitError, match="no base model spec recorded in report.json; pass base="):
        prunekit.load(no_spec)
    assert prunekit.load(no_spec, base="toy_models:mlp")[0].out_features < 32  # base= overrides

    with pytest.raises(prunekit.PrunekitError, match="base model of .*cannot import module 'nosuchmodule'"):
        prunekit.load(out, base="nosuchmodule:build")
    with pytest.raises(prunekit.PrunekitError, match=r"plan.json does not fit the base model 'test_load:other_mlp'.*"
                                                     r"0.weight has shape \[8, 16\]"):
        prunekit.load(out, base="test_load:other_mlp")

    dense = broken("dense_weights")
    from toy_models import mlp

    save_file(mlp().state_dict(), str(dense / "model.safetensors"))
    with pytest.raises(prunekit.PrunekitError, match=r"shape of '0.weight' is \(32, 16\), the rebuilt model expects"):
        prunekit.load(dense)
    junk = broken("junk_weights")
    (junk / "model.safetensors").write_text("junk")
    with pytest.raises(prunekit.PrunekitError, match="not a valid safetensors file"):
        prunekit.load(junk)
    for exc_dir in (tmp_path / "nowhere", bad_plan, no_spec, dense):
        try:
            prunekit.load(exc_dir)
        except prunekit.PrunekitError as exc:
            assert "\n" not in str(exc)


def _bert_folder(tmp_path: Path, transformers) -> tuple[Path, dict]:
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    src = tmp_path / "bert"
    transformers.BertForSequenceClassification(cfg).save_pretrained(src)
    ids = {"input_ids": torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))}
    return src, ids


@pytest.mark.parametrize("hf_config", [True, False])
def test_hf_bert_structured_round_trip(tmp_path, hf_config):
    transformers = pytest.importorskip("transformers")  # only these tests need it
    src, ids = _bert_folder(tmp_path, transformers)
    body = STRUCTURED + ("" if hf_config else "    hf_config: false\n    uniform_layers: false\n")
    out = _prune_cli(tmp_path, body, str(src))
    loaded = load_pruned(out)
    if hf_config:  # the structured stage edited config.json: from_pretrained rebuilds it
        assert loaded.rebuilt.startswith("from_pretrained")
        assert json.loads((out / "config.json").read_text())["intermediate_size"] < 64
    else:  # per-layer sizes: the base folder + plan.json
        assert "plan.json" in loaded.rebuilt and str(src) in loaded.rebuilt
    expected = _pruned_in_memory(transformers.BertForSequenceClassification.from_pretrained(src), body,
                                 {"input_ids": torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(0))})
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**ids).logits, expected(**ids).logits, rtol=0, atol=0)
