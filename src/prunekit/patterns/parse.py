"""Parse a pattern spec string ("unstructured", "2:4", "block:4x1") into a `Pattern`."""

from __future__ import annotations

import re

from prunekit.errors import PrunekitError
from prunekit.patterns.base import Pattern
from prunekit.patterns.block import Block
from prunekit.patterns.nm import NM
from prunekit.patterns.unstructured import Unstructured

VALID_FORMS = "'unstructured', 'N:M' with 0 < N < M (e.g. 2:4, 4:8, 1:4), 'block:RxC' with R, C >= 1 (e.g. block:4x1)"

_NM = re.compile(r"(\d+):(\d+)")
_BLOCK = re.compile(r"block:(\d+)x(\d+)")


def parse_pattern(spec: str | Pattern) -> Pattern:
    """Return the pattern named by `spec` (case and surrounding spaces ignored); a `Pattern` is returned as is.

    Raises:
        PrunekitError: naming the bad spec and listing the valid forms.
    """
    if isinstance(spec, Pattern):
        return spec
    if not isinstance(spec, str):
        raise PrunekitError(f"pattern must be a string, got {spec!r}; valid forms: {VALID_FORMS}")
    text = spec.strip().lower()
    if text == "unstructured":
        return Unstructured()
    if m := _NM.fullmatch(text):
        n, mm = int(m.group(1)), int(m.group(2))
        if 0 < n < mm:
            return NM(n, mm)
        raise PrunekitError(f"invalid pattern {spec!r}: N:M needs 0 < N < M. Valid forms: {VALID_FORMS}")
    if m := _BLOCK.fullmatch(text):
        r, c = int(m.group(1)), int(m.group(2))
        if r >= 1 and c >= 1:
            return Block(r, c)
        raise PrunekitError(f"invalid pattern {spec!r}: block sizes must be >= 1. Valid forms: {VALID_FORMS}")
    raise PrunekitError(f"unknown pattern {spec!r}. Valid forms: {VALID_FORMS}")
