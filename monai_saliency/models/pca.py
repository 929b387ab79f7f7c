"""PCA projection of volumes onto the signal space of a training set (Mørch et al. 1995, §2).

The training inputs ``X = [x_1 ... x_J]`` (``J`` volumes of ``I`` voxels, ``J << I``) are centred by the
mean volume ``c`` and a thin SVD of the centred ``(I, J)`` matrix gives the orthonormal basis
``B = [b_1 ... b_K]`` (``I x K``) of the signal space. With the default ``K = rank`` nothing is lost
("no loss of information"): ``B B^T (x_j - c) = x_j - c`` for every training volume. A volume is mapped
to its projections ``v = B^T (x - c)`` (``K`` numbers) and back by ``x ≈ B v + c``.

An optional (brain) mask restricts everything to the ``I`` voxels inside it; :meth:`PCAProjection.to_volume`
scatters per-voxel values (projections, saliency) back into the full grid, with the geometry (affine) of
the volumes the projection was fitted on.

Usage::

    pca = PCAProjection().fit(volumes, mask=brain)    # volumes: (J, *spatial)
    v = pca(volumes)                                   # (J, K)
    recon = pca.back_project(v)                        # (J, *spatial), zeros outside the mask
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

__all__ = ["PCAProjection"]

_BUFFERS = ("mask", "mean", "basis", "singular_values", "affine")


def _plain(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}.")
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class PCAProjection(nn.Module):
    """Centring plus an orthonormal basis of the training set's signal space; ``forward`` projects.

    The module is empty until :meth:`fit`; its buffers (``mask``, ``mean``, ``basis``, ``singular_values``,
    ``affine``) are saved and restored by ``state_dict`` / ``load_state_dict`` (load into a fresh instance).

    Args:
        n_components: number ``K`` of basis vectors; None keeps all of them (``K = rank`` of the centred
            training matrix, the paper's lossless choice).
        rank_tol: relative threshold on the singular values that decides the numerical rank; None uses
            ``max(I, J) * eps(dtype)``.
        dtype: floating dtype of the fitted buffers (the SVD runs in it); float64 by default.
        center: subtract the training mean ``c`` (the paper's choice ``c = mean``). With ``center=False``,
            ``c = 0`` and the rank can reach ``J`` instead of ``J - 1`` (e.g. ``K = J = 64`` as in the paper).

    Attributes:
        mask: bool ``(*item_shape)``: voxels used (all True without a mask).
        mean: ``(I,)`` centring vector ``c`` (masked voxels only).
        basis: ``(I, K)`` orthonormal basis ``B``; each column's largest-magnitude entry is positive.
        singular_values: ``(K,)`` singular values of the centred training matrix, descending.
        affine: ``(4, 4)`` voxel-to-world matrix of the training volumes (identity if they carried none).
    """

    def __init__(
        self,
        n_components: int | None = None,
        rank_tol: float | None = None,
        dtype: torch.dtype = torch.float64,
        center: bool = True,
    ) -> None:
        super().__init__()
        if n_components is not None and (isinstance(n_components, bool) or int(n_components) < 1):
            raise ValueError(f"n_components must be a positive int or None, got {n_components!r}.")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be floating point, got {dtype}.")
        self.n_components = None if n_components is None else int(n_components)
        self.rank_tol = rank_tol
        self.dtype = dtype
        self.center = bool(center)
        for name in _BUFFERS:
            self.register_buffer(name, None)

    # ------------------------------------------------------------------ state
    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        for name in _BUFFERS:  # buffers are None before fit: adopt the saved shapes
            key = prefix + name
            if key in state_dict and getattr(self, name) is None:
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` (or ``load_state_dict``) has set the basis."""
        return self.basis is not None

    def _require_fit(self) -> None:
        if not self.fitted:
            raise RuntimeError("PCAProjection is not fitted; call .fit(volumes, mask=...) first.")

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one volume (the mask's shape)."""
        self._require_fit()
        return tuple(self.mask.shape)

    @property
    def n_voxels(self) -> int:
        """Number ``I`` of voxels inside the mask."""
        self._require_fit()
        return int(self.basis.shape[0])

    @property
    def k(self) -> int:
        """Number ``K`` of basis vectors."""
        self._require_fit()
        return int(self.basis.shape[1])

    # ------------------------------------------------------------------ fitting
    def fit(self, volumes: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None) -> PCAProjection:
        """Fit centring and basis on ``J`` training volumes.

        Args:
            volumes: ``(J, *spatial)`` (or ``(J, 1, *spatial)`` when a mask of shape ``spatial`` is given),
                J >= 2, finite inside the mask. A MetaTensor contributes its affine.
            mask: optional bool (or 0/1) array of shape ``spatial`` (a leading singleton channel is allowed);
                only voxels where it is True enter the basis.

        Returns:
            ``self``.

        Raises:
            ValueError: fewer than 2 volumes, a mask whose shape does not match, a mask selecting no voxel,
                NaN/Inf inside the mask, a constant training set (rank 0), or ``n_components`` > rank.
        """
        affine = None
        if isinstance(volumes, MetaTensor):
            aff = volumes.affine
            affine = aff[0] if aff.ndim == 3 else aff
        x = _plain(volumes, "volumes")
        if not x.is_floating_point():
            x = x.to(self.dtype)
        if x.ndim < 2:
            raise ValueError(f"volumes must be (J, *spatial) with J >= 2, got shape {tuple(x.shape)}.")
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 training volumes to centre and fit a basis, got {x.shape[0]}.")
        m = self._check_mask(mask, x)
        x = self._items(x, m.shape, "volumes")
        xm = x[:, m].to(self.dtype)  # (J, I)
        if not torch.isfinite(xm).all():
            raise ValueError(
                "volumes contain NaN or Inf inside the mask; clean them or exclude those voxels via the mask."
            )
        n_img, n_vox = xm.shape
        mean = xm.mean(dim=0) if self.center else torch.zeros(n_vox, dtype=xm.dtype, device=xm.device)
        xc = xm - mean
        u, s, _ = torch.linalg.svd(xc.T, full_matrices=False)  # (I, J'), (J',)
        tol = self.rank_tol if self.rank_tol is not None else max(n_img, n_vox) * torch.finfo(self.dtype).eps
        rank = int((s > tol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
        if rank == 0:
            raise ValueError("the training volumes are identical inside the mask (rank 0); nothing to project on.")
        k = rank if self.n_components is None else self.n_components
        if k > rank:
            raise ValueError(
                f"n_components={k} exceeds the rank {rank} of the {'centred ' if self.center else ''}training set "
                f"(J={n_img} volumes give at most {n_img - 1 if self.center else n_img}); use n_components<={rank} or None."
            )
        u = u[:, :k]
        # deterministic sign: the largest-magnitude entry of each basis vector is positive
        pivot = u.abs().argmax(dim=0)
        sign = torch.sign(u[pivot, torch.arange(k)])
        sign[sign == 0] = 1
        self.mask = m
        self.mean = mean
        self.basis = (u * sign).contiguous()
        self.singular_values = s[:k].clone()
        self.affine = (
            torch.eye(4, dtype=torch.float64) if affine is None else torch.as_tensor(affine, dtype=torch.float64)
        ).clone()
        return self

    def _check_mask(self, mask: Any, x: torch.Tensor) -> torch.Tensor:
        if mask is None:
            return torch.ones(x.shape[1:], dtype=torch.bool, device=x.device)
        m = _plain(mask, "mask")
        if m.is_floating_point() and (
            not torch.isfinite(m).all()
            or not torch.isin(m, torch.tensor([0.0, 1.0], dtype=m.dtype, device=m.device)).all()
        ):
            raise ValueError("a floating-point mask must hold only 0 and 1; pass a bool mask.")
        m = m.bool().to(x.device)
        spatial = tuple(x.shape[1:])
        if m.ndim == x.ndim and m.shape[0] == 1:  # (1, *spatial) mask for (J, *spatial) volumes
            m = m[0]
        channel_first = x.ndim == m.ndim + 2 and x.shape[1] == 1 and tuple(x.shape[2:]) == tuple(m.shape)
        if tuple(m.shape) != spatial and not channel_first:
            raise ValueError(
                f"mask shape {tuple(m.shape)} does not match the volumes' spatial shape {spatial}; "
                "resample the mask to the volume grid."
            )
        if not m.any():
            raise ValueError("the mask selects no voxel; check its orientation / threshold.")
        return m

    @staticmethod
    def _items(x: torch.Tensor, item_shape: tuple[int, ...] | torch.Size, name: str) -> torch.Tensor:
        """Return ``x`` as ``(N, *item_shape)``, dropping a singleton channel axis if present."""
        item_shape = tuple(item_shape)
        nd = len(item_shape)
        if x.ndim == nd + 2 and x.shape[1] == 1 and tuple(x.shape[2:]) == item_shape:
            x = x[:, 0]
        if x.ndim != nd + 1 or tuple(x.shape[1:]) != item_shape:
            raise ValueError(
                f"{name} must have shape (N, *{item_shape}) or (N, 1, *{item_shape}), got {tuple(x.shape)}."
            )
        return x

    def check_volumes(self, volumes: torch.Tensor | np.ndarray, name: str = "volumes") -> torch.Tensor:
        """Validate volumes against the fitted grid: ``(N, *spatial)`` or ``(N, 1, *spatial)`` -> ``(N, *spatial)``.

        Args:
            volumes: the volumes (a MetaTensor or numpy array is accepted); not copied, not cast.
            name: the argument named in error messages.

        Returns:
            A plain tensor view ``(N, *spatial)`` (a singleton channel axis dropped).

        Raises:
            RuntimeError: if the projection is not fitted.
            TypeError: if ``volumes`` is not a tensor or array.
            ValueError: for a shape that does not match the fitted volumes.
        """
        self._require_fit()
        return self._items(_plain(volumes, name), self.mask.shape, name)

    # ------------------------------------------------------------------ mapping
    def flatten(self, volumes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Masked voxels of each volume, **not** centred: ``(N, *spatial) -> (N, I)`` in the fitted dtype.

        Raises:
            ValueError: for a shape that does not match the fitted volumes, or NaN/Inf inside the mask.
        """
        x = self.check_volumes(volumes)
        xm = x[:, self.mask.to(x.device)].to(self.dtype)
        if not torch.isfinite(xm).all():
            raise ValueError("volumes contain NaN or Inf inside the mask.")
        return xm

    def centred(self, volumes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Masked, centred voxels ``x - c``: ``(N, *spatial) -> (N, I)``."""
        xm = self.flatten(volumes)
        return xm - self.mean.to(xm.device)

    def project(self, volumes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Projections ``v = B^T (x - c)``: ``(N, *spatial)`` (or ``(N, 1, *spatial)``) ``-> (N, K)``."""
        xc = self.centred(volumes)
        return xc @ self.basis.to(xc.device)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`project` (so ``nn.Sequential(pca, head)`` maps volumes to outputs)."""
        return self.project(volumes)

    def back_project(self, v: torch.Tensor, add_mean: bool = True) -> torch.Tensor:
        """Volumes ``B v + c`` from projections: ``(N, K) -> (N, *spatial)`` MetaTensor, zeros outside the mask.

        Args:
            v: projections ``(N, K)`` (or ``(K,)`` for one volume).
            add_mean: add the centring vector ``c`` back.

        Raises:
            ValueError: if ``v``'s last axis is not ``K``.
        """
        self._require_fit()
        v = _plain(v, "v")
        single = v.ndim == 1
        v = v[None] if single else v
        if v.ndim != 2 or v.shape[1] != self.k:
            raise ValueError(f"projections must be (N, {self.k}), got {tuple(v.shape)}.")
        flat = v.to(self.dtype) @ self.basis.to(v.device).T
        if add_mean:
            flat = flat + self.mean.to(v.device)
        out = self.to_volume(flat)
        return out[0] if single else out

    def to_volume(self, values: torch.Tensor, fill: float = 0.0) -> MetaTensor:
        """Scatter per-voxel values ``(..., I)`` into the grid: ``(..., *spatial)`` MetaTensor with the fitted affine.

        Args:
            values: values for the masked voxels, in mask (C) order, last axis ``I``.
            fill: value outside the mask.

        Raises:
            ValueError: if the last axis is not ``I``.
        """
        self._require_fit()
        values = _plain(values, "values")
        if values.shape[-1] != self.n_voxels:
            raise ValueError(
                f"expected {self.n_voxels} values (voxels in the mask) on the last axis, got {values.shape[-1]}."
            )
        lead = values.shape[:-1]
        mask = self.mask.to(values.device)
        out = torch.full((*lead, *mask.shape), fill, dtype=values.dtype, device=values.device)
        out[..., mask] = values
        return MetaTensor(out, affine=self.affine.clone())

    def extra_repr(self) -> str:
        if not self.fitted:
            return f"n_components={self.n_components}, unfitted"
        return f"item_shape={self.item_shape}, voxels={self.n_voxels}, K={self.k}"
