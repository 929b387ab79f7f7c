"""Fitting, saving and loading the PCA + tanh net of the ``pet_morch_saliency`` bundle (``train.json``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_saliency.analysis import MorchSaliency
from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.synthetic.pet_phantom import PETStudy
from monai_saliency.models.pca import PCAProjection
from monai_saliency.models.tanh_net import TanhNet

from .study import StudyError

__all__ = [
    "CKPT_FORMAT",
    "MorchModel",
    "MorchNetwork",
    "build_saliency",
    "fit_model",
    "load_model",
    "load_network",
    "save_model",
]

logger = logging.getLogger("pet_morch_saliency")
CKPT_FORMAT = "monai_saliency.pet_morch/1"


@dataclass
class MorchModel:
    """A fitted projection + head and what is needed to use them again.

    Attributes:
        pca: fitted :class:`PCAProjection` (its mask is the brain mask used).
        net: the :class:`TanhNet` head.
        target_offset: subtracted from the targets before fitting (eq. 1 has no output bias).
        config: construction/training options (hidden, bias, output_bias, weight_decay, tol, seed, ...).
        train: training summary (cost, grad_max, converged, n_iter, J, K, I).
    """

    pca: PCAProjection
    net: TanhNet
    target_offset: float
    config: dict[str, Any]
    train: dict[str, Any]


def fit_model(
    study: PETStudy,
    n_components: int | None = None,
    hidden: int = 8,
    bias: bool = False,
    output_bias: bool = False,
    weight_decay: float = 0.1,
    tol: float = 1e-9,
    seed: int = 0,
    center_targets: bool = True,
    mask_threshold: float = 0.1,
) -> MorchModel:
    """Fit the PCA basis and eq. 1's tanh net on a study.

    Args:
        study: from :func:`load_study`.
        n_components: ``K`` (None: the rank, lossless).
        hidden: ``A`` tanh units.
        bias, output_bias: optional biases (not in eq. 1).
        weight_decay: ridge coefficient (0.1 by default: keeps non-negligible residuals, so the first-order
            saliency is meaningful; see ``monai_saliency/analysis/morch.py`` note 7).
        tol: gradient tolerance of the fit.
        seed: initial-weight seed.
        center_targets: subtract the mean target (eq. 1 has no output bias, ``F(0) = 0``).
        mask_threshold: without a mask file, the brain mask is ``mean scan > mask_threshold * max(mean scan)``
            (0: every voxel).

    Returns:
        :class:`MorchModel`.

    Raises:
        ValueError: from the PCA / net (e.g. ``n_components`` > rank), or an empty mask.
    """
    mask = study.mask
    if mask is None:
        mean = study.images.as_tensor().mean(0)
        mask = mean > mask_threshold * mean.max() if mask_threshold > 0 else torch.ones_like(mean, dtype=torch.bool)
    pca = PCAProjection(n_components=n_components).fit(study.images, mask=mask)
    offset = float(study.targets.mean()) if center_targets else 0.0
    net = TanhNet(pca.k, hidden=hidden, bias=bias, output_bias=output_bias, seed=seed)
    res = net.fit(pca(study.images), study.targets - offset, weight_decay=weight_decay, tol=tol)
    config = {
        "n_components": n_components,
        "hidden": hidden,
        "bias": bias,
        "output_bias": output_bias,
        "weight_decay": weight_decay,
        "tol": tol,
        "seed": seed,
        "center_targets": center_targets,
        "mask_threshold": mask_threshold,
    }
    train = {
        "cost": res.cost,
        "objective": res.objective,
        "grad_max": res.grad_max,
        "n_iter": res.n_iter,
        "converged": res.converged,
        "J": int(study.images.shape[0]),
        "K": pca.k,
        "I": pca.n_voxels,
        "scans": list(study.names),
    }
    logger.info(
        f"fitted PCA (I={pca.n_voxels} voxels, K={pca.k}) and tanh net (A={hidden}): cost E={res.cost:.4g}, "
        f"max|grad|={res.grad_max:.2g}, converged={res.converged}"
    )
    return MorchModel(pca, net, offset, config, train)


def save_model(model: MorchModel, path: str | os.PathLike, protect: Sequence[str | os.PathLike] = ()) -> Path:
    """Save a :class:`MorchModel` (state dicts + plain options) to one ``.pt`` file, atomically.

    Returns:
        The written path.
    """
    ckpt = {
        "pca": model.pca.state_dict(),
        "net": model.net.state_dict(),
        "target_offset": model.target_offset,
        "config": model.config,
        "train": model.train,
        "format": CKPT_FORMAT,
    }
    with atomic_output(path, protect=protect) as tmp:
        torch.save(ckpt, tmp)
    logger.info(f"model written to {Path(path).resolve()}")
    return Path(path)


def load_model(path: str | os.PathLike, study: PETStudy | None = None) -> MorchModel:
    """Load a model saved by :func:`save_model`; check it fits the study's grid.

    Raises:
        FileNotFoundError: no such file (train first with ``train.json``).
        StudyError: the study's volumes are not on the grid the model was fitted on.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist; fit one with configs/train.json.")
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    pca = PCAProjection()
    pca.load_state_dict(ckpt["pca"])
    cfg = ckpt["config"]
    net = TanhNet(pca.k, hidden=cfg["hidden"], bias=cfg["bias"], output_bias=cfg["output_bias"], seed=cfg["seed"])
    net.load_state_dict(ckpt["net"])
    model = MorchModel(pca, net, float(ckpt["target_offset"]), cfg, ckpt["train"])
    if study is not None:
        shape = tuple(study.images.shape[1:])
        if shape != pca.item_shape or not torch.allclose(study.affine, pca.affine.double(), atol=1e-3):
            raise StudyError(
                f"the study {study.folder} (grid {shape}) is not on the grid the model {path} was fitted on "
                f"({pca.item_shape}); fit a model on it with configs/train.json."
            )
    return model


def build_saliency(
    model: MorchModel, hessian: str = "gauss_newton", clip_negative: bool = False, chunk_bytes: int = 64 * 2**20
) -> MorchSaliency:
    """The :class:`MorchSaliency` of a fitted model."""
    return MorchSaliency(
        model.net,
        model.pca,
        hessian=hessian,
        clip_negative=clip_negative,
        chunk_bytes=chunk_bytes,
        weight_decay=model.config.get("weight_decay", 0.0),
    )


class MorchNetwork(nn.Module):
    """The fitted model as one ``nn.Module`` (the bundle's ``network_def``): PCA projection then eq. 1's tanh net.

    ``forward`` maps scans ``(N, 1, *grid)`` (or ``(N, *grid)``) to the network outputs ``(N, 1)`` in float64 (the
    centred target: ``target_offset`` is not added). Its ``state_dict`` is flat (``pca.*``, ``net.*``);
    ``load_state_dict`` also accepts the bundle's checkpoint written by :func:`save_model` (nested ``pca``/``net``
    state dicts plus training notes), so ``python -m monai.bundle ckpt_export`` loads ``models/model.pt`` as it is.
    TorchScript: export it traced (``--use_trace True``; the input shape comes from the metadata).

    Args:
        pca: a fitted :class:`PCAProjection`.
        net: the :class:`TanhNet` head (``in_features == pca.k``).

    Raises:
        ValueError: a PCA that is not fitted, or a head of another input size.
    """

    def __init__(self, pca: PCAProjection, net: TanhNet) -> None:
        super().__init__()
        if not pca.fitted or net.in_features != pca.k:
            raise ValueError(
                f"need a fitted PCA and a head with in_features == K; got fitted={pca.fitted}, "
                f"in_features={net.in_features}."
            )
        self.pca = pca
        self.net = net
        self.register_load_state_dict_pre_hook(_flatten_bundle_checkpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(N, 1)`` float64 of scans ``(N, 1, *grid)`` or ``(N, *grid)``."""
        return self.net(self.pca(x))[:, None]


def _flatten_bundle_checkpoint(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: a :func:`save_model` checkpoint becomes the flat ``pca.*``/``net.*`` state."""
    fmt = state_dict.get(prefix + "format")
    if fmt is None:
        return
    if fmt != CKPT_FORMAT:
        raise ValueError(f"checkpoint format {fmt!r} is not {CKPT_FORMAT!r}.")
    ckpt = {k[len(prefix) :]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
    for part in ("pca", "net"):
        state_dict.update({f"{prefix}{part}.{k}": v for k, v in ckpt[part].items()})


def load_network(path: str | os.PathLike) -> MorchNetwork:
    """The :class:`MorchNetwork` of a checkpoint written by :func:`save_model` (the bundle's ``network_def``).

    Raises:
        FileNotFoundError: no such file (train first with ``train.json``).
    """
    model = load_model(path)
    return MorchNetwork(model.pca, model.net)
