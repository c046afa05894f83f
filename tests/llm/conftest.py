"""Shared fixtures of the LLM tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def token_ids():
    """Three calibration rows of 16 token ids below 64 (the tiny models' vocabulary)."""
    return torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
