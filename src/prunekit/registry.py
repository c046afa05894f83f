"""Registries of named things: methods, pattern families, importance criteria, schedules.

One `Registry` per kind. Registering a name twice raises; looking up an unknown name raises a `PrunekitError` that
lists the closest valid names. `prunekit list` prints every registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prunekit.errors import PrunekitError, choices_text, suggest

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its one-line help text."""

    name: str
    obj: T
    help: str


class Registry(Generic[T]):
    """A name -> object table for one kind of thing (e.g. "method")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, obj: T | None = None, *, help: str = "") -> Any:
        """Register `obj` under `name`; without `obj`, return a decorator.

        Raises:
            ValueError: if `name` is already registered or is not a lower-case identifier-like string.
        """

        def _add(o: T) -> T:
            if not name or name != name.strip() or name.lower() != name:
                raise ValueError(f"{self.kind} name {name!r} must be a non-empty lower-case string")
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, o, help or _first_line(o))
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise naming the closest valid names."""
        entry = self._entries.get(name)
        if entry is None:
            raise PrunekitError(
                f"unknown {self.kind} {name!r}.{suggest(name, self._entries)} "
                f"Valid {self.kind}s: {choices_text(self._entries)}"
            )
        return entry.obj

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        """Entries sorted by name."""
        return (self._entries[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def _first_line(obj: object) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


METHODS: Registry[Any] = Registry("method")
PATTERNS: Registry[Callable[..., Any]] = Registry("pattern")
IMPORTANCE: Registry[Callable[..., Any]] = Registry("importance")
SCHEDULES: Registry[Callable[..., Any]] = Registry("schedule")

ALL_REGISTRIES: tuple[Registry[Any], ...] = (METHODS, PATTERNS, IMPORTANCE, SCHEDULES)
