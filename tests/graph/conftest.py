"""Dependency-graph tests: the hand-written hard cases live in tests/structured/hard_models.py."""

from __future__ import annotations

import sys
from pathlib import Path

STRUCTURED = Path(__file__).resolve().parent.parent / "structured"
if str(STRUCTURED) not in sys.path:
    sys.path.insert(0, str(STRUCTURED))
