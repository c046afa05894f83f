"""Surgery: tensors shrink by index_select, module size attributes follow, tied tensors stay tied, undo restores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.graph import remove_slices, sliceable_dims


def test_conv_linear_norm_attributes_follow():
    model = nn.ModuleDict({
        "conv": nn.Conv2d(4, 6, 3), "dw": nn.Conv2d(6, 12, 3, groups=6), "grouped": nn.Conv2d(8, 8, 1, groups=2),
        "tconv": nn.ConvTranspose2d(6, 5, 2), "bn": nn.BatchNorm2d(6), "ln": nn.LayerNorm(6), "rms": nn.RMSNorm(6),
        "gn": nn.GroupNorm(6, 6), "gn2": nn.GroupNorm(2, 8), "lin": nn.Linear(6, 3), "emb": nn.Embedding(10, 6),
    })
    removals = {
        "conv.weight": {0: [1, 4], 1: [0]}, "conv.bias": {0: [1, 4]},
        "dw.weight": {0: [2, 3]}, "dw.bias": {0: [2, 3]},
        "grouped.weight": {0: [0, 4], 1: [1]},
        "tconv.weight": {0: [0], 1: [2]}, "tconv.bias": {0: [2]},
        "bn.weight": {0: [5]}, "bn.bias": {0: [5]}, "bn.running_mean": {0: [5]}, "bn.running_var": {0: [5]},
        "ln.weight": {0: [0]}, "ln.bias": {0: [0]}, "rms.weight": {0: [0, 1]},
        "gn.weight": {0: [3]}, "gn.bias": {0: [3]}, "gn2.weight": {0: [0, 4]}, "gn2.bias": {0: [0, 4]},
        "lin.weight": {0: [2], 1: [0, 1]}, "lin.bias": {0: [2]}, "emb.weight": {1: [5]},
    }
    original = {k: v.clone() for k, v in model.state_dict().items()}
    remove_slices(model, removals)
    m = model
    assert (m["conv"].out_channels, m["conv"].in_channels, m["conv"].weight.shape) == (4, 3, (4, 3, 3, 3))
    assert (m["dw"].groups, m["dw"].in_channels, m["dw"].out_channels) == (5, 5, 10)  # one depthwise group gone
    assert (m["grouped"].groups, m["grouped"].in_channels, m["grouped"].out_channels) == (2, 6, 6)
    assert (m["tconv"].in_channels, m["tconv"].out_channels) == (5, 4)
    assert m["bn"].num_features == 5 and m["bn"].running_var.shape == (5,)
    assert m["ln"].normalized_shape == (5,) and m["rms"].normalized_shape == (4,)
    assert (m["gn"].num_groups, m["gn"].num_channels) == (5, 5) and (m["gn2"].num_groups, m["gn2"].num_channels) == (2, 6)
    assert (m["lin"].out_features, m["lin"].in_features) == (2, 4) and m["emb"].embedding_dim == 5
    kept = [i for i in range(6) if i not in (1, 4)]
    assert torch.equal(m["conv"].weight, original["conv.weight"][kept][:, 1:])
    assert isinstance(m["conv"].weight, nn.Parameter) and m["conv"].weight.requires_grad
    assert torch.equal(m["bn"].running_mean, original["bn.running_mean"][:5])


def test_tied_weights_stay_tied_and_undo_restores():
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 4))
    model.add_module("again", model[0])  # the same module under two names
    undo = remove_slices(model, {"0.weight": {0: [0]}, "0.bias": {0: [0]}})
    assert model.again.weight is model[0].weight and model.again.out_features == 5
    undo.restore()
    assert model[0].weight.shape == (6, 4) and model[0].out_features == 6


def test_bad_removals_raise():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(PrunekitError, match="removing all 2 indices of dim 0"):
        remove_slices(model, {"0.weight": {0: [0, 1]}})
    with pytest.raises(PrunekitError, match="index out of range for dim 1 of size 4"):
        remove_slices(model, {"0.weight": {1: [4]}})
    with pytest.raises(PrunekitError, match="model has no parameter or buffer '0.scale'"):
        remove_slices(model, {"0.scale": {0: [0]}})


def test_sliceable_dims_protocol():
    assert sliceable_dims(nn.Conv2d(2, 2, 1), "weight", 4) == {0, 1}
    assert sliceable_dims(nn.Embedding(5, 3), "weight", 2) == {1}  # the vocabulary is never cut
    assert sliceable_dims(nn.MultiheadAttention(4, 2), "in_proj_weight", 2) == {0, 1}  # whole heads, input columns
    assert sliceable_dims(nn.LSTM(4, 2), "weight_ih_l0", 2) == set()
    assert sliceable_dims(nn.Module(), "anything", 3) is None
