"""Tiny models the CLI tests load through the `module:function` model spec."""

from __future__ import annotations

import torch
from torch import nn


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def not_a_model() -> str:
    return "hello"


def wide_mlp() -> nn.Module:
    """Big enough that an 80%-sparse hidden layer dominates the file (the compressed export test)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4))
