"""A dataset that turns a study that fails to load into a named failure record instead of ending the run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
        except Exception as exc:  # any reader or transform error: report it with the study's name
            cause = exc.__cause__ or exc
            return {FAILED_KEY: [(_study_name(self.data[index]), f"{type(cause).__name__}: {cause}")]}


def tolerant_collate(batch: Sequence[Any]) -> dict:
    """Collate the good items with ``list_data_collate``; gather failure records under ``FAILED_KEY``.

    Returns:
        The collated batch of good items (``{}`` if none) plus ``FAILED_KEY`` when any item failed.
    """
    good = [b for b in batch if not (isinstance(b, dict) and FAILED_KEY in b)]
    failed = [rec for b in batch if isinstance(b, dict) and FAILED_KEY in b for rec in b[FAILED_KEY]]
    out = list_data_collate(good) if good else {}
    if failed:
        out[FAILED_KEY] = failed
    return out
