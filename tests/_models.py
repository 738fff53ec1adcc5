"""Small user models for the tests: what a user writes, not what torchvision ships.

- :class:`SmallCNN`: in-place ReLUs (``nn.ReLU(inplace=True)`` and ``F.relu_``), a residual
  add, a max pool and a global head: the in-place ReLU must not leak into the pre-ReLU layers.
- :class:`SmallUNet`: a two-level U-Net with a transposed convolution and a skip
  concatenation: its output comes back to stride 1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SmallCNN(nn.Module):
    """RGB in, 10 scores out; in-place ReLUs after every convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(x)))
        x = x + y
        x = F.relu_(self.conv3(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SmallUNet(nn.Module):
    """One gray channel in, two classes out, same size: down twice, up twice (transposed
    convolutions), skip connections by concatenation."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(inplace=True))
        self.enc2 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(inplace=True))
        self.bottom = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(inplace=True))
        self.up2 = nn.ConvTranspose2d(2 * c, 2 * c, 2, stride=2)
        self.dec2 = nn.Sequential(nn.Conv2d(4 * c, c, 3, padding=1), nn.ReLU(inplace=True))
        self.up1 = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.dec1 = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)
