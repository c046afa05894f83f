"""Choose which layers a method touches: `targets` and `ignore`, by exact module name or `re:` pattern.

Every entry of `targets` and `ignore` must match at least one module (a typo is an error, not a silent no-op).
The selection records every prunable layer it leaves out and why, so the report can list them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from prunekit.errors import PrunekitError, suggest
from prunekit.layers import is_prunable, tied_weights


def match_name(pattern: str, name: str) -> bool:
    """True when `name` equals `pattern`, or `pattern` is `re:REGEX` and REGEX fully matches `name`."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return pattern == name


def check_pattern(pattern: str) -> str:
    """Validate one target/ignore entry; return it unchanged."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise PrunekitError(f"target {pattern!r} must be a module name or 're:REGEX'")
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            raise PrunekitError(f"target {pattern!r} is not a valid regular expression: {exc}") from None
    return pattern


@dataclass
class TargetSelection:
    """The outcome of target selection: layers to prune, and every prunable layer left out with its reason."""

    targeted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def select_targets(
    model: nn.Module,
    targets: Sequence[str] | None,
    ignore: Sequence[str] = (),
    *,
    protected: dict[str, str] | None = None,
    strict: bool = False,
) -> TargetSelection:
    """Pick the prunable layers named by `targets` (all prunable layers when None) minus `ignore` and `protected`.

    Args:
        model: the model to inspect.
        targets: module names or `re:` patterns; None means every prunable layer.
        ignore: module names or `re:` patterns to leave out.
        protected: module name -> reason, for layers guarded by default (first layer, classifier head).
        strict: turn every skip of a layer that `targets` matched into an error.

    Raises:
        PrunekitError: an entry matches no module, nothing is left to prune, or (strict) a matched layer is skipped.
    """
    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    prunable = [n for n in names if is_prunable(modules[n])]
    for entry in list(targets or []) + list(ignore):
        check_pattern(entry)
        if not any(match_name(entry, n) for n in names):
            raise PrunekitError(
                f"{entry!r} matches no module.{suggest(entry, names)} "
                f"Prunable layers include: {', '.join(prunable[:6])}{' ...' if len(prunable) > 6 else ''}"
            )
    protected = protected or {}
    tied = tied_weights(model)
    sel = TargetSelection()
    explicit = targets is not None
    for name in names:
        module = modules[name]
        matched = (not explicit) or any(match_name(t, name) for t in targets or [])
        if not is_prunable(module):
            if explicit and name in (targets or []):  # named exactly, so the user meant this layer
                reason = f"{type(module).__name__} is not a prunable layer type"
                if strict:
                    raise PrunekitError(f"target {name!r}: {reason}")
                sel.skipped[name] = reason
            continue
        reason = None
        if not matched:
            reason = "not matched by targets"
        elif hit := next((p for p in ignore if match_name(p, name)), None):
            reason = f"ignored by {hit!r}"
        elif name in protected:
            reason = protected[name]
        elif name in tied:
            reason = f"weight tied with {', '.join(tied[name])}"
        if reason is None:
            sel.targeted.append(name)
            continue
        if strict and matched and not reason.startswith("ignored"):
            raise PrunekitError(f"strict: layer {name!r} matched by targets is skipped: {reason}")
        sel.skipped[name] = reason
    if not sel.targeted:
        raise PrunekitError(
            "no layer left to prune: targets/ignore/protections exclude every prunable layer "
            f"(skipped: {', '.join(f'{k} ({v})' for k, v in list(sel.skipped.items())[:5])})"
        )
    return sel
