"""A small zoo of random-init models for conformance tests: each builder returns (model, example_inputs).

Every model is tiny (a forward well under 50 ms on one CPU core), built offline, seeded, and returned in eval mode.
The zoo covers the layer kinds mask pruning must handle: plain Linear stacks, convolutions with a residual add,
a channel concat, a depthwise conv and BatchNorm, a ViT (patch conv + attention), BERT (classifier head), Llama
with grouped-query attention (separate LM head, or tied to the embedding) and GPT-2, whose transformers `Conv1D`
layers store weights as (in, out).

    from zoo import ZOO
    model, inputs = ZOO["llama_gqa"]()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

Built = tuple[nn.Module, Any]
SEED = 0


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def build_mlp(seed: int = SEED) -> Built:
    """Four Linear layers (32 -> 64 -> 64 -> 48 -> 10) with ReLU; input (4, 32).

    Two hidden layers sit between the protected first layer and the head, so global scope has layers to rank.
    """
    _seeded(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(),
                          nn.Linear(48, 10))
    return model.eval(), torch.randn(4, 32)


class ResidualConcatCNN(nn.Module):
    """stem conv -> two branches (1x1 conv | depthwise 3x3 + pointwise) -> torch.cat -> BN -> + stem -> head."""

    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        half = channels // 2
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.branch_a = nn.Conv2d(channels, half, 1)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, half, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.mix = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        stem = torch.relu(self.stem_bn(self.stem(x)))
        cat = torch.cat([self.branch_a(stem), self.pointwise(torch.relu(self.depthwise(stem)))], dim=1)
        y = torch.relu(self.bn(cat) + stem)
        y = torch.relu(self.mix(y)) + y
        return self.head(y.mean(dim=(2, 3)))


def build_resnet_concat(seed: int = SEED) -> Built:
    """`ResidualConcatCNN` (residual adds, a concat, a depthwise conv, BatchNorm); input (2, 3, 16, 16)."""
    _seeded(seed)
    model = ResidualConcatCNN()
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode BN is not the identity
        for bn in (model.stem_bn, model.bn):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval(), torch.randn(2, 3, 16, 16)


def build_vit(seed: int = SEED) -> Built:
    """transformers ViTForImageClassification: 32x32 images, 8x8 patches, hidden 32, 2 layers; input pixel_values."""
    from transformers import ViTConfig, ViTForImageClassification

    _seeded(seed)
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    model = ViTForImageClassification(cfg)
    return model.eval(), {"pixel_values": torch.randn(1, 3, 32, 32)}


def _token_inputs(vocab: int, batch: int = 2, tokens: int = 8) -> dict[str, Tensor]:
    ids = torch.randint(0, vocab, (batch, tokens))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def build_bert(seed: int = SEED) -> Built:
    """transformers BertForSequenceClassification: hidden 32, 2 layers, 4 heads, 3 labels; input ids (2, 8)."""
    from transformers import BertConfig, BertForSequenceClassification

    _seeded(seed)
    cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    model = BertForSequenceClassification(cfg)
    return model.eval(), _token_inputs(cfg.vocab_size)


def build_llama_gqa(seed: int = SEED, tie_word_embeddings: bool = False) -> Built:
    """transformers LlamaForCausalLM with GQA (4 query heads, 2 KV heads), hidden 64, 2 layers; input ids (2, 8)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _seeded(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tie_word_embeddings, use_cache=False)
    model = LlamaForCausalLM(cfg)
    return model.eval(), _token_inputs(cfg.vocab_size)


def build_llama_tied(seed: int = SEED) -> Built:
    """`build_llama_gqa` with the LM head tied to the token embedding."""
    return build_llama_gqa(seed, tie_word_embeddings=True)


def build_gpt2(seed: int = SEED) -> Built:
    """transformers GPT2LMHeadModel (Conv1D layers, weight stored (in, out); LM head tied), hidden 32, 2 layers."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _seeded(seed)
    cfg = GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=32, use_cache=False,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    return model.eval(), _token_inputs(cfg.vocab_size)


ZOO: dict[str, Callable[[], Built]] = {
    "mlp": build_mlp,
    "resnet_concat": build_resnet_concat,
    "vit": build_vit,
    "bert": build_bert,
    "llama_gqa": build_llama_gqa,
    "gpt2": build_gpt2,
}
"""Zoo name -> builder returning (model, example_inputs). `build_llama_tied` is kept out: it is a variant."""


def output_tensor(out: Any) -> Tensor:
    """The main tensor of a forward's output: a Tensor as is, else `logits` / `last_hidden_state` / the first item."""
    if isinstance(out, Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if isinstance(value, Tensor):
            return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"cannot find the output tensor in {type(out).__name__}")
