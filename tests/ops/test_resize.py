"""The one resize of the CAM family and Signature Activation, against torch's and OpenCV's interpolation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_saliency.ops.resize import upsample_maps


@pytest.mark.parametrize(
    "src, dst", [((14, 14), (224, 224)), ((7, 9), (30, 17)), ((5, 5), (5, 9)), ((14, 11), (40, 33))]
)
@pytest.mark.parametrize("batch", [1, 3])
def test_matrix_resize_equals_bilinear_interpolation(src, dst, batch):
    """Small 2D maps go through two matrix products: the weights of ``F.interpolate``'s bilinear kernel and OpenCV's
    ``INTER_LINEAR`` (half-pixel centres)."""
    m = torch.rand(batch, 1, *src, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = F.interpolate(m, size=dst, mode="bilinear", align_corners=False)
    got = upsample_maps(m, dst)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    cv = cv2.resize(m[0, 0].numpy(), (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(got[0, 0].numpy(), cv, atol=1e-6)
    torch.testing.assert_close(upsample_maps(m.float(), dst), ref.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["nearest", "area"])
@pytest.mark.parametrize("shape, size", [((2, 1, 4, 6), (8, 12)), ((2, 1, 2, 3, 4), (4, 6, 8)), ((2, 1, 5), (10,))])
def test_other_modes_and_dimensions_are_torch_interpolation(mode, shape, size):
    m = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(upsample_maps(m, size, mode), F.interpolate(m, size=size, mode=mode))
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    ref = F.interpolate(m, size=size, mode=linear, align_corners=False)
    torch.testing.assert_close(upsample_maps(m, size), ref)


def test_same_size_and_errors():
    m = torch.rand(2, 1, 6, 6)
    assert upsample_maps(m, (6, 6)) is m
    with pytest.raises(ValueError, match="spatial axes"):
        upsample_maps(m, (6, 6, 6))
    with pytest.raises(ValueError, match="unknown upsample mode"):
        upsample_maps(m, (12, 12), "cubic")


def test_cam_module_keeps_the_upsampler():
    from monai_saliency.methods.cam import upsample_maps as from_cam

    assert from_cam is upsample_maps
