from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import pytest
import torch
from torch import nn

from monai_saliency.models.small_cnn import SmallCNN


@pytest.fixture
def cnn2d() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(spatial_dims=2, in_channels=2, num_classes=3).eval()


@pytest.fixture
def cnn3d() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(spatial_dims=3, in_channels=1, num_classes=3, width=4).eval()


@pytest.fixture
def confident():
    """``confident(model, factor=100)``: a copy of a SmallCNN whose logits are ``factor`` times larger (a trained
    net's confidence). On an untrained tiny net ``(sum A) g`` is ~0.01 and every Grad-CAM++ variant is close to
    Grad-CAM; scaled, it spans ~0.1-70 and the Grad-CAM++ formulas differ."""

    def scale(model: nn.Module, factor: float = 100.0) -> nn.Module:
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.head.weight.mul_(factor)
            model.head.bias.mul_(factor)
        return model

    return scale


@pytest.fixture
def evaluator_maps():
    """Run an explainer as the inferer of a MONAI ``SupervisedEvaluator`` (iterations under ``torch.no_grad()``)
    over ``images`` in batches of 2; returns the maps of the last batch, stacked."""
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.inferers import Inferer

    class ExplainInferer(Inferer):
        def __init__(self, explainer):
            super().__init__()
            self.explainer = explainer

        def __call__(self, inputs, network, *args, **kwargs):
            return self.explainer(inputs)

    def run(network: nn.Module, explainer, images: torch.Tensor) -> torch.Tensor:
        data = [{"image": img, "label": torch.tensor(0)} for img in images]
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"),
            val_data_loader=DataLoader(Dataset(data), batch_size=2),
            network=network,
            inferer=ExplainInferer(explainer),
        )
        evaluator.run()
        return torch.stack([torch.as_tensor(item["pred"]) for item in evaluator.state.output])

    return run


#: three 3D NIfTI files shipped with nibabel, each with its own shape and affine (flipped, shifted, scaled axes)
NIBABEL_FILES = [
    Path(nib.__file__).parent / "tests" / "data" / name
    for name in ("anatomical.nii", "reoriented_anat_moved.nii", "standard.nii.gz")
]


@pytest.fixture
def nibabel_files() -> list[Path]:
    """:data:`NIBABEL_FILES`: three 3D NIfTI files whose shapes and affines all differ."""
    return list(NIBABEL_FILES)


@pytest.fixture
def nifti_batches():
    """A factory ``(batch_size, spatial_size=(8, 8, 8)) -> (batches, preprocessing)``: every batch of a MONAI
    DataLoader over :data:`NIBABEL_FILES` (dicts with a collated MetaTensor ``"image"``: ``LoadImaged``,
    ``EnsureChannelFirstd``, ``ScaleIntensityd``, ``Resized``), and the preprocessing ``Compose`` (to invert)."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityd

    def make(batch_size: int, spatial_size: tuple[int, ...] = (8, 8, 8)) -> tuple[list[dict], Compose]:
        pre = Compose(
            [
                LoadImaged("image", image_only=True),
                EnsureChannelFirstd("image"),
                ScaleIntensityd("image"),
                Resized("image", spatial_size=spatial_size, mode="trilinear"),
            ]
        )
        data = Dataset([{"image": str(f)} for f in NIBABEL_FILES], transform=pre)
        return list(DataLoader(data, batch_size=batch_size)), pre

    return make


@pytest.fixture
def acts2d() -> torch.Tensor:
    """Random ReLU activations (3, 24, 32, 28) with per-channel scales (Signature Activation tests)."""
    g = torch.Generator().manual_seed(3)
    return torch.relu(torch.randn(3, 24, 32, 28, generator=g)) * torch.rand(3, 24, 1, 1, generator=g)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip (with the reason) where torch sees no CUDA device; ``make gpu-check`` runs them."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run by `make gpu-check` on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
