"""Knowledge distillation from the dense teacher into the pruned student (Hinton et al. 2015).

The maths (`distill_loss`, `hidden_mse`) is pure: logits / activations in, a scalar loss out. `Distiller` is the
plumbing every fine-tuning path shares: it holds a frozen deep copy of the dense model (taken before pruning, so its
predictions are the dense ones) and turns one training batch into the distillation loss of the student, optionally
matching hidden activations of named modules through forward hooks. Use it in any loop:

    distiller = Distiller(dense_model, DistillConfig(temperature=4, alpha=0.9))
    loss = distiller.loss(student, x, y)   # instead of F.cross_entropy(student(x), y)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from prunekit.config import Config
from prunekit.errors import PrunekitError, suggest


def distill_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None, *, temperature: float,
                 alpha: float) -> Tensor:
    """alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross_entropy(student, targets).

    The T^2 factor keeps the soft term's gradients on the scale of the hard term's when T changes (Hinton et al.).
    KL is averaged over the batch (`batchmean`); logits are (B, C) or (B, ..., C) (flattened to rows).

    Args:
        student_logits: the pruned model's logits (gradients flow through them).
        teacher_logits: the dense model's logits (treated as constants).
        targets: class indices for the hard term; may be None only when alpha == 1.
        temperature: T > 0.
        alpha: weight of the soft term in [0, 1].

    Raises:
        PrunekitError: on a bad temperature / alpha, mismatched shapes, or missing targets with alpha < 1.
    """
    if not temperature > 0:
        raise PrunekitError(f"temperature {temperature!r} must be > 0")
    if not 0.0 <= alpha <= 1.0:
        raise PrunekitError(f"alpha {alpha!r} must lie in [0, 1] (1: only the teacher, 0: only the labels)")
    if student_logits.shape != teacher_logits.shape:
        raise PrunekitError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                            f"{tuple(teacher_logits.shape)} differ in shape")
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32  # half logits: fp32 maths
    s = student_logits.reshape(-1, student_logits.shape[-1]).to(dtype)
    t = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1]).to(dtype)
    loss = s.new_zeros(())
    if alpha > 0:
        kl = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                      reduction="batchmean", log_target=True)
        loss = loss + alpha * temperature**2 * kl
    if alpha < 1:
        if targets is None:
            raise PrunekitError(f"alpha {alpha} < 1 needs targets for the cross-entropy term")
        loss = loss + (1 - alpha) * F.cross_entropy(s, targets.reshape(-1))
    return loss


def hidden_mse(student_states: list[Tensor], teacher_states: list[Tensor]) -> Tensor:
    """Mean over pairs of the mean squared error between student and teacher activations (teacher detached).

    Raises:
        PrunekitError: on different list lengths or a pair of different shapes.
    """
    if len(student_states) != len(teacher_states) or not student_states:
        raise PrunekitError(f"hidden_mse: {len(student_states)} student and {len(teacher_states)} teacher states; "
                            "need the same non-zero number")
    terms = []
    for i, (s, t) in enumerate(zip(student_states, teacher_states)):
        if s.shape != t.shape:
            raise PrunekitError(f"hidden_mse: state {i} has shape {tuple(s.shape)} in the student and "
                                f"{tuple(t.shape)} in the teacher (structured pruning changed it?)")
        terms.append(F.mse_loss(s.float(), t.detach().float()))
    return torch.stack(terms).mean()


class DistillConfig(Config):
    """Distillation from the dense model: `distill: {temperature: 4, alpha: 0.9}` in a fine-tuning stage."""

    temperature: float = Field(4.0, gt=0.0, description="Softmax temperature T of the soft targets (> 0).")
    alpha: float = Field(
        0.9, ge=0.0, le=1.0,
        description="Weight of the teacher term alpha*T^2*KL; the label cross-entropy gets 1 - alpha.",
    )
    hidden_mse: float = Field(
        0.0, ge=0.0, description="Weight of the MSE between student and teacher outputs of hidden_layers (0: off)."
    )
    hidden_layers: tuple[str, ...] = Field(
        (), description="Module names whose outputs are matched by the hidden-state MSE (needs hidden_mse > 0)."
    )

    @model_validator(mode="after")
    def _hidden_pair(self) -> DistillConfig:
        if self.hidden_mse > 0 and not self.hidden_layers:
            raise PrunekitError(f"hidden_mse {self.hidden_mse} needs hidden_layers (module names to match)")
        if self.hidden_layers and self.hidden_mse == 0:
            raise PrunekitError("hidden_layers is set but hidden_mse is 0: give hidden_mse a weight > 0")
        return self


def model_logits(model: Any, x: Any) -> Tensor:
    """`model`'s logits on the batch inputs `x`: a tensor is the one positional input, a tuple / list several
    positional inputs, a dict keyword inputs (e.g. a tokenizer's input_ids, attention_mask); an output object's
    `.logits` (Hugging Face) or a tuple output's first element is the logits."""
    if isinstance(x, dict):
        out = model(**x)
    elif isinstance(x, (tuple, list)):
        out = model(*x)
    else:
        out = model(x)
    out = getattr(out, "logits", out)
    return out[0] if isinstance(out, (tuple, list)) else out


@contextmanager
def _capture(model: nn.Module, names: tuple[str, ...]) -> Iterator[list[Tensor]]:
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise PrunekitError(f"hidden_layers: no module named {name!r}.{suggest(name, list(modules))}")
    out: list[Tensor] = []
    hooks = [modules[n].register_forward_hook(lambda _m, _i, o: out.append(o[0] if isinstance(o, tuple) else o))
             for n in names]
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


class Distiller:
    """A frozen copy of the dense teacher and the distillation loss of a student batch.

    Args:
        teacher: the dense model; deep-copied, put in eval mode, gradients off (the caller's model is untouched).
        config: temperature, alpha, optional hidden-state MSE.
    """

    def __init__(self, teacher: nn.Module, config: DistillConfig) -> None:
        self.config = config
        self.teacher = copy.deepcopy(teacher).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def loss(self, student: nn.Module, x: Any, y: Tensor | None) -> Tensor:
        """The student's distillation loss on one batch (call `.backward()` on it); the teacher runs without grad.

        `x` is what `model_logits` takes (a tensor, a tuple of positional inputs or a dict of keyword inputs); both
        models get the same inputs, and a Hugging Face output's `.logits` is used."""
        cfg = self.config
        with torch.no_grad(), _capture(self.teacher, cfg.hidden_layers) as t_states:
            t_logits = model_logits(self.teacher, x)
        with _capture(student, cfg.hidden_layers) as s_states:
            s_logits = model_logits(student, x)
        loss = distill_loss(s_logits, t_logits, y, temperature=cfg.temperature, alpha=cfg.alpha)
        if cfg.hidden_mse > 0:
            loss = loss + cfg.hidden_mse * hidden_mse(s_states, t_states)
        return loss
