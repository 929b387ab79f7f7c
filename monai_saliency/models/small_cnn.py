"""A small 2D/3D convolutional classifier for demos and tests."""

from __future__ import annotations

from torch import nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Conv-ReLU-MaxPool x2, conv-ReLU, global average pooling and a linear head.

    Layer names for hooks: ``features.0`` ... ``features.7`` (``features.7`` is the last ReLU, at a quarter
    of the input's resolution), ``head``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output classes.
        width: channels of the first convolution (doubled after each pooling).

    Raises:
        ValueError: if ``spatial_dims`` is not 2 or 3.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.features = nn.Sequential(
            conv(in_channels, width, 3, padding=1),
            nn.ReLU(),
            pool(2),
            conv(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            pool(2),
            conv(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.Sequential(gap(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)))
