"""Suite-wide settings: one intra-op thread per test, and offline Hugging Face.

The test models are tiny; on a 2-core machine shared with other work a second thread mostly waits (measured here:
steps up to 100x slower), so every test runs on one thread unless it sets its own.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
