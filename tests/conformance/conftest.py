"""Shared fixtures of the conformance suite: the model zoo, built once per session and handed out as fresh copies."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from torch import nn

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:  # tests/ holds zoo.py; test folders are not packages
    sys.path.insert(0, str(TESTS))

from zoo import ZOO, build_llama_tied  # noqa: E402

_BUILDERS = {**ZOO, "llama_tied": build_llama_tied}


@pytest.fixture(scope="session")
def _zoo_cache() -> dict[str, tuple[nn.Module, Any]]:
    return {}


@pytest.fixture
def zoo(_zoo_cache: dict[str, tuple[nn.Module, Any]]) -> Callable[[str], tuple[nn.Module, Any]]:
    """`zoo(name)` -> (fresh deep copy of the model, example inputs); each model is built once per session."""

    def get(name: str) -> tuple[nn.Module, Any]:
        if name not in _zoo_cache:
            _zoo_cache[name] = _BUILDERS[name]()
        model, inputs = _zoo_cache[name]
        return copy.deepcopy(model), inputs

    return get
