"""MONAI transforms applying the structured-gradient prox (seed 000) to a channel-first gradient ``(C, *spatial)``.

Usage::

    post = Compose([StructuredProxd(keys="grad", solver="exact"), SaveImaged(keys="grad", ...)])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type

from monai_saliency.methods.structured import structured_map, structured_prox
from monai_saliency.ops.precision import cast_back
from monai_saliency.transforms._common import channel_first_float

__all__ = ["StructuredProx", "StructuredProxd"]


class StructuredProx(Transform):
    """Structured proxy of one gradient ``(C, *spatial)`` (see :mod:`monai_saliency.methods.structured`).

    Args:
        lambda_grp, lambda_l1, lambda_tv, tv_iters, tv_step, steps, solver, eps, tol, max_iter: as in
            :func:`~monai_saliency.methods.structured.structured_prox` (relative lambdas: ``g / max|g|``).
        output: ``"map"`` (default): ``(1, *spatial)`` map ``||s||_2`` over channels, min-max normalised to [0, 1];
            ``"structured"``: ``s`` ``(C, *spatial)`` in the gradient's units.

    A MetaTensor keeps its metadata; numpy in gives numpy out. The last call's solver info (objective, ...) is
    in :attr:`last_info`.

    Raises:
        ValueError: for bad options, a missing spatial axis, or NaN/Inf input.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        lambda_grp: float = 0.05,
        lambda_l1: float = 0.01,
        lambda_tv: float = 0.2,
        tv_iters: int = 5,
        tv_step: float = 0.15,
        steps: int = 12,
        solver: str = "seed",
        output: str = "map",
        eps: float = 1e-8,
        tol: float = 1e-4,
        max_iter: int = 1000,
    ) -> None:
        if output not in ("map", "structured"):
            raise ValueError(f"unknown output {output!r}; choose 'map' or 'structured'.")
        self.options = dict(
            lambda_grp=lambda_grp, lambda_l1=lambda_l1, lambda_tv=lambda_tv, tv_iters=tv_iters, tv_step=tv_step,
            steps=steps, solver=solver, eps=eps, tol=tol, max_iter=max_iter,
        )
        structured_prox(torch.zeros(1, 1, 2), **self.options)  # validate now
        self.output = output
        self.last_info: dict | None = None

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Return the map ``(1, *spatial)`` or the structured gradient ``(C, *spatial)``."""
        data = channel_first_float(img, "gradient", check_finite=False)
        sn, info = structured_prox(data[None], normalized=True, **self.options)
        self.last_info = info
        out = structured_map(sn)[0] if self.output == "map" else sn[0] * info["scale"][0]
        out = cast_back(out, data.dtype, "structured gradient")
        dtype = out.dtype if isinstance(img, torch.Tensor) else out.numpy().dtype
        return convert_to_dst_type(out, img, dtype=dtype)[0]


class StructuredProxd(MapTransform):
    """Dictionary twin of :class:`StructuredProx` (same options).

    Args:
        keys: keys of the gradients to process.
        allow_missing_keys: skip absent keys.
        kwargs: options of :class:`StructuredProx`.
    """

    backend = StructuredProx.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.prox = StructuredProx(**kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.prox(d[key])
        return d
