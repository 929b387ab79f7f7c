"""A ``SaliencyEvaluator`` over a cohort of small NIfTI files, for the engine tests."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import DataLoader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from monai_saliency.data.tolerant import TolerantDataset, tolerant_collate
from monai_saliency.engines.evaluator import SaliencyEvaluator


def nifti_cohort_evaluator(cohort: Any, network: torch.nn.Module, postprocessing: Any, batch_size: int, **kwargs: Any):
    """The cohort's studies (channels last in the files) loaded by a tolerant loader, inferred by ``network``
    (``logits_key="pred"``), post-processed by ``postprocessing``; ``kwargs`` go to the evaluator."""
    pre = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image", channel_dim=-1)])
    loader = DataLoader(TolerantDataset(cohort.datalist(), pre), batch_size=batch_size, collate_fn=tolerant_collate)
    return SaliencyEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=network,
        postprocessing=postprocessing,
        cohort=cohort,
        logits_key="pred",
        **kwargs,
    )
