"""Import the independent reference implementations installed only in ``.venv-ref`` (``make test-reference``).

Under ``make test`` (``.venv``, no reference packages) the reference tests skip with a pointer to
``make test-reference``; where ``MONAI_SALIENCY_REFERENCE=1`` (set by that target, and so in CI) a missing package
fails them instead of skipping silently. Reuse :func:`reference_module` in every module of ``tests/reference/``, and :func:`pytorch_grad_cam_maps` for any
pytorch-grad-cam method, target (classifier, segmentation, ...) or ``reshape_transform``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

REQUIRED = os.environ.get("MONAI_SALIENCY_REFERENCE", "") not in ("", "0")


def reference_module(name: str) -> ModuleType:
    """Import ``name``; skip the calling test module if it is missing, unless the reference run requires it.

    Args:
        name: module to import (e.g. ``"pytorch_grad_cam"``).

    Returns:
        The module.

    Raises:
        ImportError: if it is missing and ``MONAI_SALIENCY_REFERENCE`` is set (the test module fails to collect).
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        if REQUIRED:
            raise ImportError(
                f"{name} is required by the reference tests (MONAI_SALIENCY_REFERENCE is set) but cannot be "
                f"imported: {err}; rebuild the reference environment with `make test-reference`."
            ) from err
        pytest.skip(
            f"{name} is not installed here: run `make test-reference` (builds .venv-ref with the reference "
            "implementations)",
            allow_module_level=True,
        )


def pytorch_grad_cam_maps(
    method: str, model: nn.Module, layer: str, x: torch.Tensor, targets: Sequence, **cam_kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a pytorch-grad-cam method through its public call and record its raw maps at the layer's resolution.

    Args:
        method: class name in ``pytorch_grad_cam`` (``"GradCAM"``, ``"GradCAMPlusPlus"``, ``"EigenCAM"``, ...).
        model: the network (pytorch-grad-cam puts it in eval mode).
        layer: name of the target layer (``model.get_submodule``).
        x: input batch.
        targets: one pytorch-grad-cam target object per item (e.g. ``ClassifierOutputTarget(c)``).
        **cam_kwargs: passed to the method's constructor (e.g. ``reshape_transform``).

    Returns:
        ``(raw, out)`` in float64: ``raw`` ``(B, 1, *layer_sp)`` is what its ``get_cam_image`` returned (before its
        ReLU, resizing and min-max normalisation), ``out`` ``(B, 1, *sp)`` its final, normalised output.
    """
    pgc = reference_module("pytorch_grad_cam")
    cam = getattr(pgc, method)(model=model, target_layers=[model.get_submodule(layer)], **cam_kwargs)
    raw = []
    get_cam_image = cam.get_cam_image

    def record(*args, **kwargs):
        out = get_cam_image(*args, **kwargs)
        raw.append(np.array(out, dtype=np.float64))
        return out

    cam.get_cam_image = record
    try:
        out = cam(input_tensor=x, targets=list(targets))
    finally:
        cam.activations_and_grads.release()
    assert len(raw) == 1, "one target layer records one raw map"
    return torch.from_numpy(raw[0])[:, None], torch.from_numpy(np.asarray(out, dtype=np.float64))[:, None]


def assert_per_item_close(
    got: torch.Tensor, ref: torch.Tensor, rel: float, unclipped: torch.Tensor | None = None
) -> None:
    """Per item max |got - ref| <= rel * max |unclipped| (the map before the ReLU, default ``ref``: float32 sums
    of ``w_k A_k`` that nearly cancel leave errors relative to the terms, not to a small positive remainder);
    all-zero maps must match exactly, and at least one item is not all zero."""
    scale = (ref if unclipped is None else unclipped).flatten(1).abs().amax(1)
    err = (got - ref).flatten(1).abs().amax(1)
    assert (scale > 0).any()
    assert (err <= rel * scale).all(), (err / scale).tolist()
