"""Structured-pruning tests: import paths (hard_models.py here, zoo.py one level up); slow tests run with `-m slow`."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
