"""Transformer tokens as feature maps: ``(B, N, C)`` -> ``(B, C, *grid)`` for the CAM methods.

A vision transformer (MONAI's ``ViT``, ``UNETR``'s encoder) cuts the input into patches and carries one token per
patch, in the raster (C) order of the patch grid, after an optional class token. :class:`TokenGrid` is the
``reshape_transform`` of :class:`~monai_saliency.methods.GradCAM` and the other CAMs: it drops the class token and
folds the patch tokens back onto their grid, whose size it infers from the input's spatial size and the patch size
(2D and 3D). pytorch-grad-cam's ``reshape_transform`` convention (a callable on the layer's output alone) is accepted
by the CAMs as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["TokenGrid", "tokens_to_grid"]


def tokens_to_grid(tokens: torch.Tensor, grid: Sequence[int], class_token: bool | None = None) -> torch.Tensor:
    """Fold tokens ``(B, N, C)`` onto a patch grid: ``(B, C, *grid)``.

    Args:
        tokens: a transformer layer's output, one token per row, the patch tokens in raster order of ``grid``.
        grid: number of patches along each spatial axis.
        class_token: the first token is a class token to drop (True), there is none (False), or None: decided by
            the count (``N == prod(grid) + 1`` means a class token).

    Returns:
        ``(B, C, *grid)``.

    Raises:
        ValueError: if the tokens are not ``(B, N, C)`` or their number does not fit the grid.
    """
    if tokens.ndim != 3:
        raise ValueError(f"expected transformer tokens (B, N, C), got shape {tuple(tokens.shape)}.")
    b, n, c = tokens.shape
    grid = tuple(int(g) for g in grid)
    patches = math.prod(grid)
    if class_token is None:
        class_token = n == patches + 1
    expected = patches + int(bool(class_token))
    if n != expected:
        extra = " plus a class token" if class_token else ""
        raise ValueError(
            f"the layer has {n} tokens but the patch grid {grid} has {patches}{extra}; check patch_size / grid and "
            "class_token (the layer must carry one token per patch)."
        )
    patch_tokens = tokens[:, 1:] if class_token else tokens
    return patch_tokens.transpose(1, 2).reshape(b, c, *grid)


class TokenGrid:
    """``reshape_transform`` for transformer layers: tokens ``(B, N, C)`` -> ``(B, C, *grid)``.

    The grid is ``input_size // patch_size`` per spatial axis (read from each input, so one explainer serves several
    input sizes), or a fixed ``grid``.

    Args:
        patch_size: patch edge in voxels, one value or one per spatial axis (MONAI ``ViT(patch_size=...)``).
        class_token: None (default: decided by the token count), True or False (see :func:`tokens_to_grid`).
        grid: a fixed patch grid instead of one inferred from the input size.

    Raises:
        ValueError: for non-positive sizes; on use, if neither the input size nor ``grid`` is known, or the tokens do
            not fit the grid.
    """

    def __init__(
        self,
        patch_size: int | Sequence[int] | None = None,
        class_token: bool | None = None,
        grid: Sequence[int] | None = None,
    ) -> None:
        if patch_size is None and grid is None:
            raise ValueError("give patch_size (the grid is then read from the input size) or grid.")
        sizes = [] if patch_size is None else ([patch_size] if isinstance(patch_size, int) else list(patch_size))
        if any(int(p) < 1 for p in [*sizes, *(grid or [])]):
            raise ValueError(f"patch_size and grid must be positive, got {patch_size!r} and {grid!r}.")
        self.patch_size = patch_size
        self.class_token = class_token
        self.grid = None if grid is None else tuple(int(g) for g in grid)

    def grid_for(self, spatial_size: Sequence[int] | None) -> tuple[int, ...]:
        """The patch grid of an input of ``spatial_size``.

        Raises:
            ValueError: if the size is unknown and no fixed grid was given, or the patch size has another length.
        """
        if self.grid is not None:
            return self.grid
        if spatial_size is None:
            raise ValueError("TokenGrid needs the input's spatial size (or a fixed grid) to fold the tokens.")
        dims = len(spatial_size)
        patch = [self.patch_size] * dims if isinstance(self.patch_size, int) else list(self.patch_size)
        if len(patch) != dims:
            raise ValueError(f"patch_size {self.patch_size!r} has {len(patch)} axes, the input {dims}.")
        return tuple(int(s) // int(p) for s, p in zip(spatial_size, patch))

    def __call__(self, tokens: torch.Tensor, spatial_size: Sequence[int] | None = None) -> torch.Tensor:
        """Fold ``tokens`` ``(B, N, C)`` of an input with spatial size ``spatial_size`` -> ``(B, C, *grid)``."""
        return tokens_to_grid(tokens, self.grid_for(spatial_size), self.class_token)

    def __repr__(self) -> str:
        return f"TokenGrid(patch_size={self.patch_size!r}, class_token={self.class_token!r}, grid={self.grid!r})"
