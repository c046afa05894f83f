"""Which modules of a transformer block are attention, MLP or norm, so that `parts` can keep the others whole.

Found from the structure, not per architecture: the repeated blocks come from `prunekit.llm.find_blocks`; a direct
child of a block is a norm when its class name contains "Norm" (or it is a LayerNorm / RMSNorm), attention when its
name contains "attn" or "attention", and MLP otherwise (Llama `mlp`, BERT `intermediate` / `output`). Keeping a part
whole means ignoring its modules in the structured engine, which freezes every group they belong to.
"""

from __future__ import annotations

import re

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.llm import find_blocks

_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)


def _kind(name: str, module: nn.Module) -> str | None:
    if not any(True for _ in module.parameters()):
        return None
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or "norm" in type(module).__name__.lower():
        return "norm"
    return "attention" if _ATTENTION.search(name) else "mlp"


def block_parts(model: nn.Module) -> tuple[str, dict[str, list[str]]]:
    """(the blocks' ModuleList name, {"attention" / "mlp" / "norm": child names of the first block})."""
    prefix, blocks = find_blocks(model)
    parts: dict[str, list[str]] = {"attention": [], "mlp": [], "norm": []}
    for name, child in blocks[0].named_children():
        kind = _kind(name, child)
        if kind is not None:
            parts[kind].append(name)
    return prefix, parts


def ignore_patterns(model: nn.Module, keep_parts: tuple[str, ...]) -> list[str]:
    """The `ignore` entries (regexes) that keep whole every part not in `keep_parts` (the parts that may shrink).

    Raises:
        PrunekitError: a part asked for that the blocks do not have.
    """
    prefix, parts = block_parts(model)
    for part in ("attention", "mlp"):
        if part in keep_parts and not parts[part]:
            found = ", ".join(f"{k}: {v}" for k, v in parts.items() if v) or "none"
            raise PrunekitError(f"parts: the blocks of {type(model).__name__} have no {part} module (children "
                                f"found: {found}); choose from the parts they have")
    out = []
    base = re.escape(prefix) + r"\.\d+\."
    for part in ("attention", "mlp"):
        if part not in keep_parts:
            out += [f"re:{base}{re.escape(child)}" for child in parts[part]]
    if "hidden" not in keep_parts:
        out += [f"re:{base}{re.escape(child)}" for child in parts["norm"]]
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        name = next((n for n, m in model.named_modules() if m is emb and n), None) if emb is not None else None
        if name:
            out.append(name)
    return out
