"""A dataset that turns a study that fails to load into a named failure record instead of ending the run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.data import Dataset, list_data_collate

__all__ = ["FAILED_KEY", "TolerantDataset", "tolerant_collate"]

FAILED_KEY = "failed_studies"


def _study_name(item: Any) -> str:
    if isinstance(item, dict):
        for value in item.values():
            if isinstance(value, str):
                return value
    return str(item)


class TolerantDataset(Dataset):
    """MONAI ``Dataset`` whose items that raise in their transform become ``{FAILED_KEY: [(name, error)]}``.

    Use with :func:`tolerant_collate` and :class:`monai_saliency.engines.evaluator.SaliencyEvaluator`, which
    skip these records, report each by name and end the run with an error once the good studies are done.
    Works with DataLoader workers (the failure travels inside the item).

    Args:
        data: datalist (e.g. ``[{"image": path}, ...]``); the first string value of an item names it.
        transform: the loading/preprocessing transform.
    """

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as exc:  # noqa: BLE001  any reader or transform error: report it with the study's name
            cause = exc.__cause__ or exc
            return {FAILED_KEY: [(_study_name(self.data[index]), f"{type(cause).__name__}: {cause}")]}


def _loaded_name(item: Any, index: int) -> str:
    """The file a loaded item came from (its first MetaTensor's ``filename_or_obj``), else its position."""
    if isinstance(item, dict):
        for value in item.values():
            name = getattr(value, "meta", {}).get("filename_or_obj") if isinstance(value, torch.Tensor) else None
            if isinstance(name, (str, os.PathLike)):
                return os.path.basename(name)
    return f"item {index}"


def _check_shapes(good: Sequence[Any]) -> None:
    """Raise a clear error when loaded studies of one batch have tensors of different shapes (they cannot stack).

    Raises:
        ValueError: naming the studies, the key and the shapes.
    """
    if len(good) < 2 or not all(isinstance(b, dict) for b in good):
        return
    for key, first in good[0].items():
        if not isinstance(first, torch.Tensor):
            continue
        shapes = [tuple(b[key].shape) if isinstance(b.get(key), torch.Tensor) else None for b in good]
        if len(set(shapes)) > 1:
            listing = ", ".join(f"{_loaded_name(b, i)} {shape}" for i, (b, shape) in enumerate(zip(good, shapes)))
            raise ValueError(
                f"studies of different shapes cannot share a batch ({key!r}: {listing}). Run with "
                "--dataloader#batch_size 1, or give every study one shape in the preprocessing (padding the batch "
                "would change the network's input and so the maps)."
            )


def tolerant_collate(batch: Sequence[Any]) -> dict:
    """Collate the good items with ``list_data_collate``; gather failure records under ``FAILED_KEY``.

    Returns:
        The collated batch of good items (``{}`` if none) plus ``FAILED_KEY`` when any item failed.

    Raises:
        ValueError: if good items of the batch hold tensors of different shapes (``batch_size > 1`` over studies
            that the preprocessing does not bring to one shape); the message names them.
    """
    good = [b for b in batch if not (isinstance(b, dict) and FAILED_KEY in b)]
    failed = [rec for b in batch if isinstance(b, dict) and FAILED_KEY in b for rec in b[FAILED_KEY]]
    _check_shapes(good)
    out = list_data_collate(good) if good else {}
    if failed:
        out[FAILED_KEY] = failed
    return out
