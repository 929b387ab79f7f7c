"""End-to-end demo: train a small CNN on generated images, explain one held-out image, write NIfTI + PNG.

Run ``python -m monai_saliency.demo --output-dir outputs/demo``. The input is written as NIfTI with a
non-identity affine, read back with MONAI's ``LoadImage`` (a MetaTensor), explained through the explainer
protocol, and the map is written with the input's affine, so it overlays the input in any NIfTI viewer.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

# MONAI announces at import that an optional GPU DICOM codec is missing; irrelevant to this demo.
warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

import numpy as np
import torch
from monai.transforms import LoadImage

from monai_saliency.data.nifti import save_nifti
from monai_saliency.data.synthetic.blobs import make_blob_dataset
from monai_saliency.methods.gradients import VanillaGrad
from monai_saliency.models.small_cnn import SmallCNN
from monai_saliency.models.training import accuracy as held_out_accuracy
from monai_saliency.models.training import fit_classifier
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.visualize.overlay import save_overlay_png

__all__ = ["main", "run_demo", "train_blob_classifier"]

DEMO_AFFINE = np.array([[0.8, 0, 0, -25.6], [0, 0.8, 0, -25.6], [0, 0, 1.0, 10.0], [0, 0, 0, 1]])


def train_blob_classifier(
    steps: int = 150, n_train: int = 256, shape: tuple[int, ...] = (64, 64), seed: int = 0
) -> tuple[SmallCNN, float]:
    """Train :class:`SmallCNN` to tell blob images from blank ones; returns the model (eval mode) and held-out accuracy."""
    torch.manual_seed(seed)
    images, labels, _ = make_blob_dataset(n_train, shape, seed=seed)
    model = fit_classifier(SmallCNN(spatial_dims=len(shape)), images, labels, steps=steps, seed=seed)
    test_x, test_y, _ = make_blob_dataset(64, shape, seed=seed + 1)
    accuracy = held_out_accuracy(model, test_x, test_y)
    return model, accuracy


def run_demo(output_dir: str | Path = "outputs/demo", steps: int = 150, seed: int = 0) -> dict[str, Path | float]:
    """Train, explain one held-out positive image and write ``input.nii.gz``, ``saliency.nii.gz``, ``overlay.png``.

    Args:
        output_dir: folder for the outputs (created).
        steps: training steps.
        seed: seed of data and training.

    Returns:
        Paths of the written files, the held-out accuracy and the share of saliency inside the blob.
    """
    out = Path(output_dir)
    model, accuracy = train_blob_classifier(steps=steps, seed=seed)
    images, _, masks = make_blob_dataset(2, (64, 64), seed=seed + 2)
    image, mask = images[1], masks[1]  # item 1 is a positive

    input_path = save_nifti(image, out / "input.nii.gz", affine=DEMO_AFFINE)
    x = LoadImage(image_only=True, ensure_channel_first=True)(str(input_path))[None]  # (1, 1, H, W) MetaTensor

    with VanillaGrad(model, reduce="max_abs") as explainer:
        saliency = minmax_normalize(explainer(x))
    saliency_path = save_nifti(saliency[0], out / "saliency.nii.gz")
    png_path = save_overlay_png(
        x[0, 0], saliency[0, 0], out / "overlay.png", title="VanillaGrad, |gradient| (max over channels)"
    )
    inside = float(saliency[0, 0][mask[0]].sum() / saliency[0, 0].sum().clamp_min(1e-12))
    return {
        "input": input_path,
        "saliency": saliency_path,
        "overlay": png_path,
        "accuracy": accuracy,
        "saliency_inside_blob": inside,
        "blob_area_fraction": float(mask.float().mean()),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = run_demo(args.output_dir, steps=args.steps, seed=args.seed)
    print(f"held-out accuracy of the demo classifier: {result['accuracy']:.3f}")
    print(
        f"share of saliency inside the blob: {result['saliency_inside_blob']:.3f} "
        f"(blob covers {result['blob_area_fraction']:.3f} of the image)"
    )
    for key in ("input", "saliency", "overlay"):
        print(f"{key:>9}: {Path(result[key]).resolve()}")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
