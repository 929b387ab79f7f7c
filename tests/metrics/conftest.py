from __future__ import annotations

import pytest
import torch
from torch import nn


class RegionSum(nn.Module):
    """Two-class model: logit 0 = sum of the input (all channels) inside a fixed region, logit 1 = 0."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.region).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


class Linear(nn.Module):
    """Linear score <w, x> for class 0 and <-w, x> for class 1."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, -s], dim=1)


@pytest.fixture
def region_model_factory():
    return RegionSum


@pytest.fixture
def linear_model_factory():
    return Linear
