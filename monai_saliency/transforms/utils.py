"""Helpers shared by the array and dictionary transforms: input handling, option checks, the signature blur rule,
and the forwarding of the deprecated module paths (``monai_saliency.transforms.fourier`` and its siblings)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from monai_saliency.ops.blur import gaussian_blur
from monai_saliency.ops.checks import all_finite

__all__ = ["NEW_HOMES", "channel_first_float", "gaussian_smooth", "moved_names"]

#: where the names of the deprecated module paths now live, searched in order by :func:`moved_names`
NEW_HOMES = ("monai_saliency.transforms", "monai_saliency.transforms.utils")


def channel_first_float(img: torch.Tensor | np.ndarray, what: str = "image", check_finite: bool = True) -> torch.Tensor:
    """Plain floating tensor view of a channel-first ``(C, *spatial)`` input (integers become float32).

    Args:
        img: tensor, MetaTensor or array ``(C, *spatial)``.
        what: name used in error messages.
        check_finite: reject NaN/Inf.

    Returns:
        A plain ``torch.Tensor`` (no copy for float tensors).

    Raises:
        ValueError: without a spatial axis, or with NaN/Inf when ``check_finite``.
    """
    data = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
    if data.ndim < 2:
        raise ValueError(f"expected a channel-first {what} (C, *spatial), got shape {tuple(data.shape)}.")
    if not data.is_floating_point():
        data = data.float()
    if check_finite and not all_finite(data):
        raise ValueError(f"the {what} holds NaN or Inf; clean it first.")
    return data


def gaussian_smooth(x: torch.Tensor, sigma: float, spatial_dims: int, truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of the trailing ``spatial_dims`` axes with mirrored borders (scipy's ``"mirror"``).

    The smoothing of :class:`~monai_saliency.transforms.ImageSignature`:
    :func:`monai_saliency.ops.blur.gaussian_blur` with the kernel radius capped at each axis' size minus one.

    Args:
        x: floating-point tensor ``(*leading, *spatial)``.
        sigma: standard deviation in voxels (``<= 0`` returns ``x``).
        spatial_dims: number of trailing axes to blur.
        truncate: kernel half-width in sigmas, ``int(truncate * sigma + 0.5)``, capped per axis at the axis size
            minus one.

    Returns:
        Blurred tensor, same shape and dtype.
    """
    if sigma <= 0:
        return x
    radii = [int(min(truncate * sigma, n - 1) + 0.5) for n in x.shape[x.ndim - spatial_dims :]]
    return gaussian_blur(x, sigma, spatial_dims=spatial_dims, mode="mirror", radius=radii)


def moved_names(old_module: str, names: Sequence[str]) -> Callable[[str], Any]:
    """Module-level ``__getattr__`` for a deprecated module path: warn, then forward to the new home.

    Args:
        old_module: the deprecated module's name (``__name__``).
        names: the public names it served; each is looked up in :data:`NEW_HOMES`, in order.

    Returns:
        A ``__getattr__(name)`` that, for a name in ``names``, emits a ``DeprecationWarning`` naming the new import
        and returns the object; any other name raises ``AttributeError``.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        home = next(m for m in NEW_HOMES if hasattr(importlib.import_module(m), name))
        warnings.warn(
            f"{old_module}.{name} is deprecated and will be removed in the next release; use "
            f"`from {home} import {name}`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)

    return __getattr__
