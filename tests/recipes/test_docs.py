"""docs/recipes.md documents every option of every registered method."""

from __future__ import annotations

from pathlib import Path

import prunekit  # noqa: F401
from prunekit.registry import METHODS

DOC = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"


def test_every_method_option_is_documented():
    text = DOC.read_text()
    for name in METHODS.names():
        assert f"### `{name}`" in text, f"docs/recipes.md has no section for method {name!r}"
        section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        for field in METHODS.get(name).config_cls.model_fields:
            assert f"| `{field}` |" in section, f"docs/recipes.md: method {name!r} lacks option {field!r}"
