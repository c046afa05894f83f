"""Remove whole transformer blocks from the model's ModuleList and keep everything that counts them consistent.

- The kept blocks form a new ModuleList in the parent's attribute (found by `prunekit.llm.find_blocks`).
- Every `layer_idx` attribute inside a kept block (Hugging Face attention uses it to index the KV cache) becomes the
  block's new position.
- Hugging Face config: `num_hidden_layers` (via the config's attribute map, so GPT-2's `n_layer` too) and every
  per-layer list field of the old length (`layer_types`, ...) restricted to the kept blocks. The model class is then
  rebuilt from the edited config on the meta device and its state-dict shapes compared with the pruned model's, so a
  note says whether `save_pretrained` + `from_pretrained` rebuilds it.
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.llm import find_blocks
from prunekit.methods.structured.hf_config import is_hf_model, state_shapes


def _rebuilds(model: nn.Module) -> bool:
    try:
        with torch.device("meta"):
            fresh = type(model)._from_config(model.config)
    except Exception:  # a config the class rejects
        return False
    return state_shapes(fresh) == state_shapes(model)


def drop_blocks(model: nn.Module, drop: list[int]) -> list[str]:
    """Remove the blocks at indices `drop` in place; returns notes (config fields edited, reload check)."""
    prefix, blocks = find_blocks(model)
    old = len(blocks)
    keep = [i for i in range(old) if i not in set(drop)]
    parent_name, _, attr = prefix.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.ModuleList([blocks[i] for i in keep]))
    renumbered = 0
    for new, i in enumerate(keep):
        for module in blocks[i].modules():
            if isinstance(getattr(module, "layer_idx", None), int) and module.layer_idx != new:
                module.layer_idx = new
                renumbered += 1
    notes = [f"removed blocks {drop} of {old} ({prefix}); {len(keep)} remain"
             + (f"; {renumbered} layer_idx attribute(s) renumbered" if renumbered else "")]
    if not is_hf_model(model):
        return notes
    config = model.config
    edits = [f"num_hidden_layers {config.num_hidden_layers} -> {len(keep)}"]
    for field, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == old and hasattr(config, field):
            setattr(config, field, [value[i] for i in keep])
            edits.append(f"{field} restricted to the kept blocks")
    config.num_hidden_layers = len(keep)
    ok = _rebuilds(model)
    notes.append("hf_config: " + ", ".join(edits) + ("; from_pretrained rebuilds these shapes (checked on the meta "
                 "device)" if ok else "; WARNING: the model class rebuilt from this config has other shapes, "
                 "from_pretrained will not load it"))
    return notes
