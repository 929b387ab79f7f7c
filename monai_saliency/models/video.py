"""A small (2+1)D CNN that classifies angiogram cines: "has a moderate-or-severe lesion" (seed 001, §4).

The paper used MoviNets by transfer learning; a ~27 k-parameter (2+1)D network (receptive field 26 px, ~45 MMAC
per 16x64x64 cine) trained from scratch on the synthetic cines of :mod:`monai_saliency.data.synthetic.angiogram` plays
that role here (weights ~0.1 MB).

Layout (input ``(B, 1, T, H, W)``, ``w = width``, ``k = temporal_window``)::

    features.tmin    temporal minimum over windows of k frames    (T/k, H,   W)
    features.stem    1x3x3 conv-BN-ReLU, C=2w                     (T/k, H,   W)
    features.pool1   max-pool (1, 2, 2)                           (T/k, H/2, W/2)
    features.stage2  1x3x3 conv-BN-ReLU, C=4w                     (T/k, H/2, W/2)
    features.pool2   max-pool (1, 2, 2)                           (T/k, H/4, W/4)
    features.stage3  (2+1)D block: two 1x3x3 + one 3x1x1, C=4w    (T/k, H/4, W/4)  <- CAM / Signature Activation layer
    head             [global mean, global max] over (T, H, W) -> dropout -> linear

``features.stage3`` keeps a time axis (``T/k`` = 4 for 16 frames), so maps computed there are per frame (per
window of ``k`` frames) after resizing to the input; no layer collapses ``T`` (DESIGN §7). The temporal minimum
first is the cheap part that makes CPU training feasible: the dye darkens vessels, so each window keeps its most
opacified state. Global *max* pooling next to the mean lets a single focal lesion drive the decision.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["Conv2Plus1d", "TemporalMinPool", "VideoLesionNet"]


def _spatial(in_channels: int, out_channels: int, stride: int = 1) -> OrderedDict[str, nn.Module]:
    return OrderedDict(
        spatial=nn.Conv3d(
            in_channels, out_channels, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
        ),
        bn_s=nn.BatchNorm3d(out_channels),
        relu=nn.ReLU(),
    )


class Conv2Plus1d(nn.Sequential):
    """Factorised 3D convolution: spatial ``1x3x3`` conv(s) -> BN -> ReLU, then temporal ``3x1x1`` conv -> BN -> ReLU.

    Sub-module names: ``spatial``, ``bn_s``, ``relu_s``, (``spatial2``, ``bn_s2``, ``relu_s2`` when
    ``spatial_layers=2``), ``temporal``, ``bn_t``, ``relu`` (the block output).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        spatial_layers: 1 or 2 spatial convolutions before the temporal one.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_layers: int = 1) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(spatial_layers):
            sfx = "" if i == 0 else str(i + 1)
            c_in = in_channels if i == 0 else out_channels
            layers[f"spatial{sfx}"] = nn.Conv3d(c_in, out_channels, (1, 3, 3), padding=(0, 1, 1), bias=False)
            layers[f"bn_s{sfx}"] = nn.BatchNorm3d(out_channels)
            layers[f"relu_s{sfx}"] = nn.ReLU()
        layers["temporal"] = nn.Conv3d(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), bias=False)
        layers["bn_t"] = nn.BatchNorm3d(out_channels)
        layers["relu"] = nn.ReLU()
        super().__init__(layers)


class TemporalMinPool(nn.Module):
    """Minimum over non-overlapping windows of ``k`` frames: ``(B, C, T, H, W) -> (B, C, ceil(T/k), H, W)``.

    In a displayed angiogram the dye darkens the vessels, so the per-window minimum keeps the most opacified
    state of every pixel (a short "minimum-intensity projection", as readers scroll to peak opacification).
    A trailing partial window is padded by repeating the last frame.

    Args:
        k: window length in frames (1 = identity).
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = int(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return x
        pad = (-x.shape[2]) % self.k
        if pad:
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, pad, -1, -1)], 2)
        return -nn.functional.max_pool3d(-x, (self.k, 1, 1))


class VideoLesionNet(nn.Module):
    """(2+1)D CNN video classifier for ``(B, C, T, H, W)`` cines.

    Args:
        in_channels: input channels (1 for X-ray).
        num_classes: output logits (2: no / has a moderate-or-severe lesion).
        width: channel unit: the blocks have ``2w, 4w, 4w`` channels.
        dropout: dropout before the linear head.
        temporal_window: frames merged by the input's temporal minimum (``T`` is divided by it, rounding up).
        stem_stride: spatial stride of the stem convolution (2 for 128 x 128 inputs: the layers after it cost as at
            64 x 64 and ``features.stage3`` has ``H/8 x W/8`` positions); the parameters do not change.

    Attributes:
        cam_layer: name of the recommended layer for per-frame activation maps (``"features.stage3"``).

    Raises:
        ValueError: for non-positive sizes or a dropout outside [0, 1).
    """

    cam_layer: str = "features.stage3"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: int = 8,
        dropout: float = 0.1,
        temporal_window: int = 4,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if min(in_channels, num_classes, width) < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"need positive in_channels/num_classes/width and 0 <= dropout < 1, got {in_channels}, "
                f"{num_classes}, {width}, {dropout}."
            )
        self.in_channels = in_channels
        if temporal_window < 1 or stem_stride < 1:
            raise ValueError(f"temporal_window and stem_stride must be >= 1, got {temporal_window}, {stem_stride}.")
        self.temporal_window = temporal_window
        self.features = nn.Sequential(
            OrderedDict(
                tmin=TemporalMinPool(temporal_window),
                stem=nn.Sequential(_spatial(in_channels, 2 * width, stem_stride)),
                pool1=nn.MaxPool3d((1, 2, 2)),
                stage2=nn.Sequential(_spatial(2 * width, 4 * width)),
                pool2=nn.MaxPool3d((1, 2, 2)),
                stage3=Conv2Plus1d(4 * width, 4 * width, spatial_layers=2),
            )
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of a cine batch ``(B, C, T, H, W)`` (``T >= 2``, ``H, W`` divisible by 4).

        Raises:
            ValueError: for a wrong rank or channel count, ``T < 2`` or ``H, W`` too small.
        """
        shape = list(x.shape)  # a list (not tuple(x.shape)) keeps the checks scriptable by TorchScript
        if len(shape) != 5 or shape[1] != self.in_channels:
            raise ValueError(
                f"expected a cine batch (B, {self.in_channels}, T, H, W), got shape {shape}; "
                "a single (T, H, W) cine needs x[None, None]."
            )
        if shape[2] < 2 or min(shape[3], shape[4]) < 4:
            raise ValueError(f"need T >= 2 frames and H, W >= 4, got {shape[2:]}.")
        a = self.features(x)
        pooled = torch.cat([a.mean((2, 3, 4)), a.amax((2, 3, 4))], 1)
        return self.head(self.dropout(pooled))
