"""Hand-written hard cases for structured pruning: each builder returns (model in eval mode, example inputs).

Every model is tiny, seeded, and has non-trivial normalization statistics (so eval-mode BatchNorm is not the
identity and the equivalence check has something to catch). The cases are the ones dependency-graph pruners get
wrong: residual adds, concatenation, chunk -> cat in both orders, channel shuffle, depthwise and grouped convs,
squeeze-excitation, U-Net skip concatenation, a layer called twice, RMSNorm / LayerNorm / GroupNorm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def _randomize_norms(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)):
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    """Conv -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(24, 64), nn.ReLU(), nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ResidualCNN(nn.Module):
    """Two residual blocks (identity and projection shortcut), BN everywhere, flatten(1) into a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.b1 = nn.Sequential(cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.b2 = nn.Sequential(cbr(16, 32), nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.proj = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(32 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.b1(x))
        x = torch.relu(self.proj(x) + self.b2(x))
        return self.head(self.pool(x).flatten(1))


class ConcatBranches(nn.Module):
    """Two branches of different widths concatenated, then a conv reads the concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.a = cbr(16, 12, 1)
        self.b = nn.Sequential(cbr(16, 8), cbr(8, 20))
        self.mix = cbr(32, 24)
        self.head = nn.Linear(24, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        return self.head(self.mix(y).mean((2, 3)))


class ChunkCat(nn.Module):
    """chunk(2) -> cat in the same and in the swapped order, feeding two convs."""

    def __init__(self, swap: bool) -> None:
        super().__init__()
        self.swap = swap
        self.stem = cbr(3, 16)
        self.conv = cbr(16, 16)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.stem(x).chunk(2, dim=1)
        y = torch.cat([b, a] if self.swap else [a, torch.sigmoid(b)], dim=1)
        return self.out(self.conv(y)).mean((2, 3))


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's shuffle: view (N, g, C/g, H, W) -> transpose -> reshape (N, C, H, W)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Shuffle(nn.Module):
    """grouped conv -> shuffle -> plain conv, and plain conv -> shuffle -> plain conv.

    (A grouped conv after the shuffle would couple every channel into one unit, correctly but uselessly.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 24)
        self.g1 = cbr(24, 24, 1, groups=3)
        self.c2 = cbr(24, 12, 1)
        self.c3 = cbr(12, 16, 3)
        self.head = nn.Linear(16, 7)

    def forward(self, x: Tensor) -> Tensor:
        x = channel_shuffle(self.g1(self.stem(x)), 3)
        x = channel_shuffle(self.c2(x), 4)
        return self.head(self.c3(x).mean((2, 3)))


class DepthwiseGrouped(nn.Module):
    """Inverted-residual style: expand 1x1 -> depthwise 3x3 (multiplier 2) -> grouped 1x1 -> project, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.expand = cbr(16, 32, 1)
        self.dw = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.grouped = cbr(64, 32, 1, groups=4)
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = x + self.project(self.grouped(self.dw(self.expand(x))))
        return self.head(x.mean((2, 3)))


class ConvIntoGrouped(nn.Module):
    """A plain conv feeding a grouped conv (groups=4, 4 channels per group) feeding a plain conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16)
        self.g = cbr(16, 24, 3, groups=4)
        self.c = nn.Conv2d(24, 6, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.g(self.a(x))).mean((2, 3))


class SqueezeExcite(nn.Module):
    """conv -> SE (global pool, reduce, expand, sigmoid, channel-wise scale) -> conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = cbr(3, 32)
        self.reduce = nn.Conv2d(32, 8, 1)
        self.expand = nn.Conv2d(8, 32, 1)
        self.out = nn.Conv2d(32, 10, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        s = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.out(x * s).mean((2, 3))


class UNet(nn.Module):
    """Encoder -> downsample -> bottleneck -> ConvTranspose upsample -> concat with the encoder skip -> decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = cbr(3, 16)
        self.down = nn.MaxPool2d(2)
        self.mid = cbr(16, 32)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec = cbr(32, 16)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.enc(x)
        y = self.up(self.mid(self.down(skip)))
        return self.out(self.dec(torch.cat([y, skip], dim=1)))


class SharedLayer(nn.Module):
    """One conv module called twice (weights shared), with different BNs after each call."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(16), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = torch.relu(self.bn1(self.shared(x)))
        x = torch.relu(self.bn2(self.shared(x)))
        return self.head(x.mean((2, 3)))


class NormMLP(nn.Module):
    """Token MLP blocks with nn.RMSNorm, nn.LayerNorm and a GroupNorm conv, residual stream kept by the output."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(12, 32)
        self.rms = nn.RMSNorm(32)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.ln = nn.LayerNorm(32)
        self.fc3, self.fc4 = nn.Linear(32, 48), nn.Linear(48, 32)
        self.head = nn.Linear(32, 6)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        h = h + self.fc2(torch.nn.functional.silu(self.fc1(self.rms(h))))
        h = h + self.fc4(torch.nn.functional.gelu(self.fc3(self.ln(h))))
        return self.head(h.mean(1))


class GroupNormCNN(nn.Module):
    """GroupNorm with 4 groups (uniform per group), GroupNorm with groups == channels, and one with 1 group."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.c2, self.n2 = nn.Conv2d(16, 12, 3, padding=1), nn.GroupNorm(12, 12)
        self.c3, self.n3 = nn.Conv2d(12, 8, 3, padding=1), nn.GroupNorm(1, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.n1(self.c1(x)))
        x = torch.relu(self.n2(self.c2(x)))
        x = torch.relu(self.n3(self.c3(x)))
        return self.head(x.mean((2, 3)))


def _build(cls: Callable[[], nn.Module], shape: tuple[int, ...], seed: int = 0) -> tuple[nn.Module, Any]:
    torch.manual_seed(seed)
    model = _randomize_norms(cls())
    return model, torch.randn(*shape)


IMG = (2, 3, 8, 8)
CASES: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "mlp": lambda: _build(MLP, (4, 24)),
    "residual_cnn": lambda: _build(ResidualCNN, IMG),
    "concat": lambda: _build(ConcatBranches, IMG),
    "chunk_cat": lambda: _build(lambda: ChunkCat(swap=False), IMG),
    "chunk_cat_swapped": lambda: _build(lambda: ChunkCat(swap=True), IMG),
    "channel_shuffle": lambda: _build(Shuffle, IMG),
    "depthwise_grouped": lambda: _build(DepthwiseGrouped, IMG),
    "conv_into_grouped": lambda: _build(ConvIntoGrouped, IMG),
    "squeeze_excite": lambda: _build(SqueezeExcite, IMG),
    "unet": lambda: _build(UNet, IMG),
    "shared_layer": lambda: _build(SharedLayer, IMG),
    "rmsnorm_mlp": lambda: _build(NormMLP, (2, 5, 12)),
    "groupnorm_cnn": lambda: _build(GroupNormCNN, IMG),
}
