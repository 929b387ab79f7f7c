from __future__ import annotations

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
            device=torch.device("cpu"), val_data_loader=DataLoader(Dataset(data), batch_size=2), network=network,
            inferer=ExplainInferer(explainer),
        )
        evaluator.run()
        return torch.stack([torch.as_tensor(item["pred"]) for item in evaluator.state.output])

    return run
