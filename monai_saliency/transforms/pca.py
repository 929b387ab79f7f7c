"""MONAI transforms around :class:`~monai_saliency.models.pca.PCAProjection`: volume -> projections and back.

Usage in a pipeline::

    pca = PCAProjection().fit(train_volumes, mask=brain)
    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), PCAProjectd("image", pca)])
    item = pre({"image": "scan.nii.gz"})      # item["image"]: (K,) projections
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from monai_saliency.models.pca import PCAProjection

__all__ = ["PCAProject", "PCABackProject", "PCAProjectd", "PCABackProjectd"]


def _check_projection(projection: PCAProjection) -> PCAProjection:
    if not isinstance(projection, PCAProjection):
        raise TypeError(f"projection must be a PCAProjection, got {type(projection).__name__}.")
    if not projection.fitted:
        raise ValueError("the projection is not fitted; call projection.fit(volumes, mask) first.")
    return projection


class PCAProject(Transform):
    """Project one channel-first volume onto the basis: ``(1, *spatial)`` or ``(*spatial)`` -> ``(K,)``.

    Args:
        projection: a fitted :class:`PCAProjection`.

    Raises:
        ValueError: if the volume does not match the fitted grid, or holds NaN/Inf inside the mask.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, projection: PCAProjection) -> None:
        self.projection = _check_projection(projection)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Return the projections ``v = B^T (x - c)`` as a plain ``(K,)`` tensor (float64 by default)."""
        x = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        item = self.projection.item_shape
        if tuple(x.shape) == item:
            x = x[None]
        elif x.ndim == len(item) + 1 and x.shape[0] == 1 and tuple(x.shape[1:]) == item:
            pass
        else:
            raise ValueError(f"expected one volume of shape (1, *{item}) or {item}, got {tuple(x.shape)}.")
        return self.projection.project(x)[0]


class PCABackProject(Transform):
    """Map projections back to a volume: ``(K,)`` -> ``(1, *spatial)`` MetaTensor with the fitted affine.

    Args:
        projection: a fitted :class:`PCAProjection`.
        add_mean: add the training mean volume back (False: the centred reconstruction).

    Raises:
        ValueError: if the input does not hold ``K`` values.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, projection: PCAProjection, add_mean: bool = True) -> None:
        self.projection = _check_projection(projection)
        self.add_mean = add_mean

    def __call__(self, v: torch.Tensor) -> MetaTensor:
        """Return ``B v (+ c)`` in the grid, zeros outside the mask, channel-first."""
        v = torch.as_tensor(v.as_tensor() if isinstance(v, MetaTensor) else v).reshape(-1)
        return self.projection.back_project(v[None], add_mean=self.add_mean)


class PCAProjectd(MapTransform):
    """Dictionary twin of :class:`PCAProject`.

    Args:
        keys: keys of the volumes to project.
        projection: a fitted :class:`PCAProjection`.
        allow_missing_keys: do not raise for absent keys.
    """

    backend = PCAProject.backend

    def __init__(self, keys: KeysCollection, projection: PCAProjection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.projector = PCAProject(projection)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.projector(d[key])
        return d


class PCABackProjectd(MapTransform):
    """Dictionary twin of :class:`PCABackProject`.

    Args:
        keys: keys of the projection vectors.
        projection: a fitted :class:`PCAProjection`.
        add_mean: add the training mean volume back.
        allow_missing_keys: do not raise for absent keys.
    """

    backend = PCABackProject.backend

    def __init__(
        self, keys: KeysCollection, projection: PCAProjection, add_mean: bool = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.back = PCABackProject(projection, add_mean)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.back(d[key])
        return d
