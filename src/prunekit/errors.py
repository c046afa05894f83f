"""Exception types.

`PrunekitError` marks a user mistake (a bad config value, a recipe, a flag, a file). It subclasses ValueError so
plain Python callers can catch it as usual; the CLI turns it into one line on stderr and exit code 2. Anything else
that escapes is a bug in prunekit and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PrunekitError(ValueError):
    """A user mistake: the message names the bad value and, where there are any, the valid choices."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest valid names, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def choices_text(choices: Iterable[str]) -> str:
    """Format valid choices for an error message: 'a, b, c'."""
    return ", ".join(sorted(str(c) for c in choices))
