"""Fixtures for prunekit.data tests: every test gets its own empty cache folder; slow tests need `-m slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Point PRUNEKIT_CACHE_DIR at a fresh folder so no test reads or writes the real cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(cache))
    return cache


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords and HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)
