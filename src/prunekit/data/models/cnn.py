"""A small residual CNN for 1-D signals or 2-D images, built only from prunable Conv/BatchNorm/Linear layers.

Layout: stem (3-wide conv + BN + ReLU) -> stages of residual basic blocks (two 3-wide convs with BN; the first block
of every stage after the first halves the resolution and widens, with a 1-wide conv + BN shortcut) -> global average
pool -> Linear classifier. The residual additions couple channels across blocks, which is what structured pruning
must respect; everything else is plain `nn.Conv*d` / `nn.BatchNorm*d` / `nn.Linear`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (identity, or 1-wide conv + BN when the shape changes), then ReLU."""

    def __init__(self, dims: int, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        conv, bn = _CONV[dims], _BN[dims]
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = bn(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), bn(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Residual CNN classifier.

    Args:
        dims: 1 for (B, C, L) signals, 2 for (B, C, H, W) images.
        in_channels: Input channels.
        num_classes: Output logits.
        widths: Channels of each stage; stage i > 0 starts with a stride-2 block.
        blocks: Residual blocks per stage.
    """

    def __init__(self, dims: int, in_channels: int, num_classes: int, widths: Sequence[int], blocks: int) -> None:
        super().__init__()
        if dims not in _CONV:
            raise ValueError(f"dims must be 1 or 2, got {dims!r}")
        conv, bn = _CONV[dims], _BN[dims]
        self.stem = nn.Sequential(conv(in_channels, widths[0], 3, padding=1, bias=False), bn(widths[0]),
                                  nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(dims, c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))
