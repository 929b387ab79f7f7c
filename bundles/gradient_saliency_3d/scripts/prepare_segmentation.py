"""Regenerate the small segmentation network of ``configs/inference_segmentation.json`` deterministically.

Run from the repository root: ``python bundles/gradient_saliency_3d/scripts/prepare_segmentation.py``. It trains the
tiny MONAI UNet of that config to segment the bright blob of generated 3D volumes (class 1: within two blob radii of
its centre; :func:`monai_saliency.data.synthetic.blobs.make_blob_dataset`) and writes ``models/segmentation.pt``
(about 120 kB). The sample volumes are those of ``scripts/prepare.py`` (the classifier's).
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from prepare import BUNDLE, SHAPE, config_network  # the classifier's script, beside this one

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.synthetic.blobs import make_blob_dataset


def dice(network: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean Dice of the predicted blob over the items that hold one."""
    with torch.no_grad():
        pred = network.eval()(images).argmax(1, keepdim=True).bool()
    inter = (pred & masks).flatten(1).sum(1).float()
    total = (pred.flatten(1).sum(1) + masks.flatten(1).sum(1)).float()
    has = masks.flatten(1).any(1)
    return float((2 * inter[has] / total[has]).mean())


def main(steps: int = 120, lr: float = 1e-2, seed: int = 0) -> None:
    torch.manual_seed(seed)
    network = config_network("inference_segmentation.json")
    images, _, masks = make_blob_dataset(96, SHAPE, seed=seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    network.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (8,), generator=g)
        opt.zero_grad()
        loss = loss_fn(network(images[idx]), masks[idx].long())
        loss.backward()
        opt.step()
    test_x, _, test_m = make_blob_dataset(16, SHAPE, seed=seed + 1)
    score = dice(network, test_x, test_m)
    with atomic_output(BUNDLE / "models" / "segmentation.pt") as tmp:
        torch.save(network.state_dict(), tmp)
    print(f"held-out blob Dice {score:.3f}; weights written under {BUNDLE / 'models'}")


if __name__ == "__main__":
    main()
