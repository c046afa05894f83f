"""Fixtures for prunekit.data tests: every test gets its own empty cache folder; slow tests run with `-m slow`."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Point PRUNEKIT_CACHE_DIR at a fresh folder so no test reads or writes the real cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(cache))
    return cache
