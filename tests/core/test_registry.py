"""Registries: duplicates raise, unknown names suggest the closest ones."""

from __future__ import annotations

import pytest

import prunekit  # noqa: F401  (registers built-ins)
from prunekit.errors import PrunekitError
from prunekit.registry import METHODS, Registry


def test_unknown_name_suggests_closest():
    with pytest.raises(PrunekitError, match=r"unknown method 'magnitdue'\. Did you mean: magnitude\?"):
        METHODS.get("magnitdue")


def test_duplicate_registration_raises():
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a", 2)


def test_builtin_methods_registered_with_help():
    assert {"magnitude", "random"} <= set(METHODS.names())
    assert all(e.help for e in METHODS.entries())
