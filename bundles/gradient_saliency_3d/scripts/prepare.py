"""Regenerate this bundle's sample volumes and shipped weights deterministically.

Run from the repository root: ``python bundles/gradient_saliency_3d/scripts/prepare.py``. It trains the small
MONAI DenseNet of ``configs/inference.json`` on generated 3D blob volumes (label 1: one bright blob) and writes
``models/model.pt`` and ``sample_data/case_00{0..3}.nii.gz`` (non-identity affines, two positives).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.nifti import save_nifti
from monai_saliency.data.synthetic.blobs import make_blob_dataset
from monai_saliency.models.training import accuracy, fit_classifier

BUNDLE = Path(__file__).resolve().parents[1]
SHAPE = (32, 32, 32)


def config_network(config: str = "inference.json") -> torch.nn.Module:
    """The ``network_def`` of one of this bundle's configs (``configs/<config>``), freshly initialised."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / config))
    return parser.get_parsed_content("network_def")


def main(steps: int = 150, lr: float = 1e-2, seed: int = 0) -> None:
    torch.manual_seed(seed)
    network = config_network()
    images, labels, _ = make_blob_dataset(192, SHAPE, seed=seed)
    fit_classifier(network, images, labels, steps=steps, batch_size=16, lr=lr, seed=seed)
    test_x, test_y, _ = make_blob_dataset(64, SHAPE, seed=seed + 1)
    acc = accuracy(network, test_x, test_y)
    with atomic_output(BUNDLE / "models" / "model.pt") as tmp:
        torch.save(network.state_dict(), tmp)
    sample, sample_labels, _ = make_blob_dataset(4, SHAPE, seed=seed + 2)
    for i in range(4):
        affine = np.diag([1.2 + 0.1 * i, 1.2, 1.5, 1.0])
        affine[:3, 3] = [-20.0, -18.0, 4.0 * i]
        save_nifti(sample[i], BUNDLE / "sample_data" / f"case_{i:03d}.nii.gz", affine=affine)
    with atomic_output(BUNDLE / "sample_data" / "labels.json") as tmp:
        tmp.write_text(json.dumps({f"case_{i:03d}": int(sample_labels[i]) for i in range(4)}, indent=1))
    print(f"held-out accuracy {acc:.3f}; weights and {len(sample)} sample volumes written under {BUNDLE}")


if __name__ == "__main__":
    main()
