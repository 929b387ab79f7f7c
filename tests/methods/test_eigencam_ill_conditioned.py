"""Eigen-CAM on activations whose float32 Gram matrix makes LAPACK's eigh fail to converge.

The fixture is one item of the sanity experiment (blob CNN seed 3, data seed 303, independent randomisation seed 3,
item 10): 27 of its 32 channels are all zero and a few entries are denormal; ``torch.linalg.eigh`` in float32 raised
``LinAlgError`` on it and crashed the experiment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from monai_saliency.methods import EigenCAM

ACTS = Path(__file__).parent / "data" / "eigencam_dead_channels.npy"


def _reference(acts: np.ndarray) -> np.ndarray:
    """First principal component projection by numpy's SVD in float64, sign fixed as EigenCAM documents."""
    m = acts.reshape(acts.shape[0], -1).T.astype(np.float64)  # (N, C)
    m = m - m.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(m, full_matrices=False)
    proj = m @ vt[0]
    ref = acts.astype(np.float64).mean(0).ravel()
    if np.sum((proj - proj.mean()) * (ref - ref.mean())) < 0:
        proj = -proj
    return proj.reshape(acts.shape[1:])


def test_projection_survives_an_ill_conditioned_gram_and_matches_svd():
    acts = torch.from_numpy(np.load(ACTS))  # (1, 32, 8, 8) float32
    assert acts.dtype == torch.float32 and int((acts.flatten(2).abs().sum(2) == 0).sum()) >= 27
    proj = EigenCAM.projection(acts)
    assert proj.shape == (1, 1, 8, 8) and proj.dtype == torch.float32 and torch.isfinite(proj).all()
    np.testing.assert_allclose(proj[0, 0].numpy(), _reference(acts[0].numpy()), rtol=1e-4, atol=1e-5)


def test_batch_with_the_bad_item_equals_items_alone():
    bad = torch.from_numpy(np.load(ACTS))
    good = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(0)).relu()
    batch = torch.cat([good[:1], bad, good[1:]])
    together = EigenCAM.projection(batch)
    alone = torch.cat([EigenCAM.projection(batch[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
