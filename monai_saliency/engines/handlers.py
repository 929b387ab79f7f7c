"""Ignite handler that explains a fixed probe batch during training or evaluation."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from matplotlib import colormaps
from monai.data import MetaTensor
from monai.utils import CommonKeys
from torch import nn

from monai_saliency.core import evaluation_mode
from monai_saliency.data.nifti import save_nifti
from monai_saliency.engines.inferers import ExplainerSpec
from monai_saliency.methods.base import Explainer
from monai_saliency.ops.normalize import minmax_normalize

__all__ = ["SaliencyHandler", "overlay_rgb"]

FIRST_BATCH = "first_batch"


def _is_loader(probe: Any) -> bool:
    """An iterable of batches (a data loader, a list of batches), not an array."""
    return isinstance(probe, Iterable) and not isinstance(probe, (str, np.ndarray, torch.Tensor))


def _middle_slice(volume: torch.Tensor) -> torch.Tensor:
    """Middle slice of every trailing axis beyond the last two: (*sp) -> (H, W)."""
    while volume.ndim > 2:
        volume = volume.select(0, volume.shape[0] // 2)
    return volume


def overlay_rgb(image: torch.Tensor, saliency: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a grey image and a saliency map into an RGB array ``(H, W, 3)`` in [0, 1].

    Args:
        image: ``(*spatial)``; for 3D/video the middle slice/frame of the leading axes is shown.
        saliency: same shape as ``image``.
        alpha: weight of the coloured map.
        cmap: matplotlib colormap.

    Returns:
        float32 RGB array.

    Raises:
        ValueError: if the shapes differ.
    """
    if image.shape != saliency.shape:
        raise ValueError(f"image {tuple(image.shape)} and saliency {tuple(saliency.shape)} shapes differ.")
    img = minmax_normalize(_middle_slice(image.detach().float().cpu())[None])[0].numpy()
    sal = minmax_normalize(_middle_slice(saliency.detach().float().cpu())[None])[0].numpy()
    colour = colormaps[cmap](sal)[..., :3]
    return ((1 - alpha) * img[..., None] + alpha * colour).astype(np.float32)


class SaliencyHandler:
    """Every ``interval`` epochs, explain a fixed probe batch; log overlays to TensorBoard and/or save NIfTI.

    The network runs in eval mode during the explanation (so BatchNorm statistics and dropout of a training
    network are untouched) and its mode is restored afterwards. Maps are min-max normalised per item and
    channel-reduced by the explainer's own options; a multi-channel map is logged as its channel mean.

    Args:
        explainer: an Explainer on the engine's network, or a factory ``network -> Explainer`` (built once, at
            the first event).
        probe: input batch ``(B, C, *spatial)``; a MetaTensor's affine is used for the NIfTI files. Or
            ``"first_batch"``: the first batch the attached engine loads (its ``image_key`` entry, kept fixed for
            the whole run); or a data loader (any iterable of batches, e.g. ``"@val_dataloader"`` in a bundle):
            its first batch, drawn once at the first event.
        interval: run every ``interval`` epochs.
        output_dir: if given, write ``{tag}_epoch{N}_item{i}.nii.gz`` there (atomically).
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` (or anything with ``add_image``), optional.
        tag: name prefix of the images and files.
        class_idx: class to explain (None: each item's predicted class), or a target (:mod:`monai_saliency.core.targets`).
        network: the network to explain; default ``engine.network``.
        image_key: key of the input in dict batches (``"first_batch"`` or a data loader); tuple/list batches use
            their first item.

    Raises:
        ValueError: for ``interval < 1`` or a probe that is not a batched tensor (checked when it is drawn, for
            ``"first_batch"`` and data loaders).
    """

    def __init__(
        self,
        explainer: ExplainerSpec,
        probe: torch.Tensor | str | Iterable,
        interval: int = 1,
        output_dir: str | os.PathLike | None = None,
        summary_writer: Any | None = None,
        tag: str = "saliency",
        class_idx: int | torch.Tensor | None = None,
        network: nn.Module | None = None,
        image_key: str = CommonKeys.IMAGE,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1 epoch, got {interval}.")
        self.image_key = image_key
        self.source: str | Iterable | None = None
        if isinstance(probe, torch.Tensor):
            self.probe: torch.Tensor | None = self._check_probe(probe)
        elif probe == FIRST_BATCH if isinstance(probe, str) else _is_loader(probe):
            self.probe, self.source = None, probe
        else:
            raise ValueError(f"probe must be a batched tensor, {FIRST_BATCH!r} or a data loader, got {probe!r}.")
        self.spec = explainer
        self.interval = interval
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.writer = summary_writer
        self.tag = tag
        self.class_idx = class_idx
        self.network = network
        self.explainer: Explainer | None = explainer if isinstance(explainer, Explainer) else None
        self.written: list[Path] = []

    @staticmethod
    def _check_probe(probe: Any) -> torch.Tensor:
        if not isinstance(probe, torch.Tensor) or probe.ndim < 3:
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ValueError(f"probe must be a batched tensor (B, C, *spatial), got {shape}.")
        return probe

    def _probe_from_batch(self, batch: Any) -> torch.Tensor:
        """The input of a (collated) batch, detached and copied so later iterations cannot change it."""
        if isinstance(batch, Mapping):
            if self.image_key not in batch:
                raise ValueError(
                    f"the batch has no {self.image_key!r} (keys {sorted(map(str, batch))}); set image_key."
                )
            image = batch[self.image_key]
        else:
            image = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self._check_probe(image).detach().clone()

    def _capture_first_batch(self, engine: Engine) -> None:
        if self.probe is None:
            self.probe = self._probe_from_batch(engine.state.batch)

    def attach(self, engine: Engine) -> None:
        """Run on ``EPOCH_COMPLETED`` every ``interval`` epochs of ``engine`` (with ``probe="first_batch"``, also
        keep the first batch ``engine`` loads)."""
        if self.source == FIRST_BATCH:
            engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._capture_first_batch)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> torch.Tensor:
        if self.probe is None:
            if self.source == FIRST_BATCH:
                raise RuntimeError("probe='first_batch' but no batch was captured: attach the handler with attach().")
            self.probe = self._probe_from_batch(next(iter(self.source)))
        network = self.network or getattr(engine, "network", None)
        if network is None:
            raise ValueError("the engine has no .network; pass network= to SaliencyHandler.")
        if self.explainer is None:
            self.explainer = self.spec(network)
        device = next(network.parameters()).device
        x = self.probe.to(device)
        with evaluation_mode(network):
            maps = self.explainer(x, class_idx=self.class_idx)
        maps = minmax_normalize(maps.as_tensor() if isinstance(maps, MetaTensor) else maps)
        epoch = engine.state.epoch
        for i in range(x.shape[0]):
            if self.writer is not None:
                rgb = overlay_rgb(x[i].mean(0), maps[i].mean(0))
                self.writer.add_image(f"{self.tag}/item{i}", rgb, epoch, dataformats="HWC")
            if self.output_dir is not None:
                affine = None
                if isinstance(self.probe, MetaTensor):
                    affine = self.probe.affine[i] if self.probe.affine.ndim == 3 else self.probe.affine
                path = self.output_dir / f"{self.tag}_epoch{epoch:04d}_item{i}.nii.gz"
                self.written.append(save_nifti(maps[i].cpu(), path, affine=affine))
        return maps

    def close(self) -> None:
        """Remove the hooks of an explainer this handler built from a factory."""
        if self.explainer is not None and not isinstance(self.spec, Explainer):
            self.explainer.close()
