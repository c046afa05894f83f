"""Whole-head pruning of `torch.nn.MultiheadAttention`.

Torch's MHA ties its attention width (num_heads * head_dim) to `embed_dim`, the width of the query (the residual
stream): `F.multi_head_attention_forward` splits the packed in-projection into (3, embed_dim) and computes
`head_dim = embed_dim // num_heads`. Removing heads while keeping the residual stream (or the reverse) therefore
needs a forward in which the two widths differ. `PrunedMultiheadAttention` is that forward: an
`nn.MultiheadAttention` subclass (same parameters and state-dict keys, same arguments and outputs, same maths) that
surgery switches a module to when, after slicing, the attention width no longer equals `embed_dim`.

Graph side (`_rules_shape.reshape`): inside an MHA module, the head split `view(L, N * num_heads, head_dim)` (written
with constant sizes by torch) is read head-wise, like a `view(..., -1, head_dim)`: every head is one unit that owns
its q, k and v rows of `in_proj_weight` / `in_proj_bias` (or `q/k/v_proj_weight`) and its `out_proj` columns.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MHA_SLICEABLE = {"in_proj_weight": {0, 1}, "in_proj_bias": {0}, "q_proj_weight": {0, 1}, "k_proj_weight": {0, 1},
                 "v_proj_weight": {0, 1}, "bias_k": {2}, "bias_v": {2}}
"""Tensor of an `nn.MultiheadAttention` -> dims surgery may slice (rows: attention channels in whole heads; columns:
the query / key / value inputs; `bias_k` / `bias_v`: (1, 1, attention width)). `out_proj` is a Linear of its own."""


def head_dims(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Module path -> (num_heads, head_dim) of every `nn.MultiheadAttention` in `model`."""
    return {path: (int(m.num_heads), int(m.head_dim)) for path, m in model.named_modules()
            if isinstance(m, nn.MultiheadAttention)}


def mha_sizes(module: nn.MultiheadAttention) -> dict[str, Any] | None:
    """The sizes implied by an MHA's (possibly sliced) tensors: attention width, embed_dim, kdim, vdim, num_heads.

    Returns None when the attention width is not a whole number of heads (the forward will then fail, which the
    equivalence check reports)."""
    if module.in_proj_weight is not None:
        width, embed = int(module.in_proj_weight.shape[0]) // 3, int(module.in_proj_weight.shape[1])
        kdim = vdim = embed
    else:
        width, embed = int(module.q_proj_weight.shape[0]), int(module.q_proj_weight.shape[1])
        kdim, vdim = int(module.k_proj_weight.shape[1]), int(module.v_proj_weight.shape[1])
    if width % module.head_dim:
        return None
    return {"width": width, "embed_dim": embed, "kdim": kdim, "vdim": vdim, "num_heads": width // module.head_dim}


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` whose attention width (num_heads * head_dim) may differ from `embed_dim`.

    Same parameters, arguments (`key_padding_mask`, `need_weights`, `attn_mask`, `average_attn_weights`,
    `is_causal`, batch_first, unbatched inputs, `bias_k` / `bias_v`, `add_zero_attn`, dropout) and outputs as torch's
    slow path, computed head by head with a fixed `head_dim`. `_qkv_same_embed_dim` is False on these modules
    (the query width and the attention width differ), which keeps `nn.TransformerEncoderLayer`'s fused fast path,
    written for equal widths, away from them. A 3-D `attn_mask` must already be sized for the kept heads.
    """

    def forward(  # noqa: PLR0912, PLR0915 - mirrors F.multi_head_attention_forward step by step
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
        need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        tgt_len, bsz, _ = query.shape
        key_padding_mask = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                             other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                             target_type=query.dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None
        else:
            attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                          target_type=query.dtype, check_other=False)
            if key_padding_mask is not None:
                is_causal = False
        q, k, v = self._project(query, key, value)
        if attn_mask is not None and attn_mask.dim() == 2:
            attn_mask = attn_mask.unsqueeze(0)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1)])
            attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
            key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
        hd = self.head_dim
        q = q.reshape(tgt_len, -1, hd).transpose(0, 1)  # (bsz * heads, L, head_dim): heads written as -1
        k = k.reshape(k.shape[0], -1, hd).transpose(0, 1)
        v = v.reshape(v.shape[0], -1, hd).transpose(0, 1)
        heads = q.shape[0] // bsz
        if self.add_zero_attn:
            zeros = torch.zeros((q.shape[0], 1, hd), dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
            key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
        src_len = k.size(1)
        if key_padding_mask is not None:
            kpm = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src_len)
            attn_mask = kpm if attn_mask is None else attn_mask + kpm
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            scores = q * math.sqrt(1.0 / float(hd))
            if attn_mask is not None:
                scores = torch.baddbmm(attn_mask, scores, k.transpose(-2, -1))
            else:
                scores = torch.bmm(scores, k.transpose(-2, -1))
            weights = F.softmax(scores, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            out = torch.bmm(weights, v).transpose(0, 1).contiguous().view(tgt_len * bsz, -1)
            out = F.linear(out, self.out_proj.weight, self.out_proj.bias).view(tgt_len, bsz, -1)
            weights = weights.view(bsz, heads, tgt_len, src_len)
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                out, weights = out.squeeze(1), weights.squeeze(0)
        else:
            if attn_mask is not None:
                attn_mask = (attn_mask.unsqueeze(0) if attn_mask.size(0) == 1 and attn_mask.dim() == 3
                             else attn_mask.view(bsz, heads, -1, src_len))
            q, k, v = (t.view(bsz, heads, t.shape[1], hd) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
            out = out.permute(2, 0, 1, 3).contiguous().view(bsz * tgt_len, -1)
            out = F.linear(out, self.out_proj.weight, self.out_proj.bias).view(tgt_len, bsz, -1)
            weights = None
            if not batched:
                out = out.squeeze(1)
        if batched and self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        if self.in_proj_weight is not None:
            if query is key and key is value:
                return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
