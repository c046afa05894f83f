"""Recipe loading: valid recipes resolve every default; each kind of mistake names file, stage, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import prunekit  # noqa: F401  (registers built-ins)
from prunekit.errors import PrunekitError
from prunekit.recipes import load_recipe, parse_recipe


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_issue_example_recipe_loads(tmp_path):
    r = load_recipe(
        _write(
            tmp_path,
            """
stages:
  - method: magnitude
    sparsity: 0.8
    scope: global
    pattern: unstructured      # or "2:4", "block:4x1"
    ignore: ["re:.*classifier.*"]
""",
        )
    )
    (stage,) = r.stages
    assert stage.method == "magnitude"
    assert stage.config.sparsity == 0.8 and stage.config.scope == "global"
    resolved = yaml.safe_load(r.to_yaml())
    assert resolved["stages"][0]["min_density"] == 0.02  # defaults written out
    assert parse_recipe(resolved).to_dict() == r.to_dict()  # round trip


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("stages:\n  - method: magnitude\n    sparsity: 1.5\n", r"stage 0 \(magnitude\): key 'sparsity': 1.5 is invalid"),
        ("stages:\n  - method: magnitdue\n    sparsity: 0.5\n", r"stage 0: unknown method 'magnitdue'\. Did you mean: magnitude\? Valid methods: .*random"),
        ("stages:\n  - method: magnitude\n    sparsty: 0.5\n", r"unknown key 'sparsty'\. Did you mean: sparsity\? Valid keys: .*scope"),
        ("stages:\n  - method: magnitude\n    sparsity: 0.5\n    pattern: '3:2'\n", r"key 'pattern': '3:2' is invalid"),
        ("stages:\n  - method: magnitude\n    sparsity: 0.5\n    scope: globl\n", r"key 'scope': 'globl' is invalid: Input should be 'layer' or 'global'"),
        ("stages:\n  - method: magnitude\n    sparsity: 0.6\n    pattern: '2:4'\n", r"sparsity 0.6 contradicts pattern '2:4', which implies 0.5"),
        ("stages:\n  - method: magnitude\n    pattern: '2:4'\n    scope: global\n", r"scope 'global' does not apply to pattern '2:4'"),
        ("stages:\n  - method: magnitude\n", r"sparsity is required with pattern 'unstructured'"),
        ("stages: []\n", r"'stages' must be a non-empty list"),
        ("stage:\n  - method: magnitude\n", r"unknown top-level key 'stage'\. Did you mean: stages\?"),
        ("stages:\n  - sparsity: 0.5\n", r"stage 0: each stage is a mapping with a 'method' key"),
        ("stages: [\n", r"not valid YAML at line 2"),
        ("- 1\n- 2\n", r"a recipe is a mapping with a 'stages:' list, got list"),
        ("stages:\n  - method: magnitude\n    sparsity: 0.99\n", r"sparsity 0.99 leaves density 0.01, below min_density 0.02"),
    ],
)
def test_recipe_errors_name_the_problem(tmp_path, body, match):
    path = _write(tmp_path, body)
    with pytest.raises(PrunekitError, match=match) as info:
        load_recipe(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(PrunekitError, match="recipe file not found: nope.yaml"):
        load_recipe("nope.yaml")


def test_yaml_is_never_evaluated(tmp_path):
    path = _write(tmp_path, "stages: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(PrunekitError, match="not valid YAML"):
        load_recipe(path)
