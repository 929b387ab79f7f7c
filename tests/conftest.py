from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_saliency.models.small_cnn import SmallCNN


@pytest.fixture
def cnn2d() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(spatial_dims=2, in_channels=2, num_classes=3).eval()


@pytest.fixture
def cnn3d() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(spatial_dims=3, in_channels=1, num_classes=3, width=4).eval()
