from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.transforms import Lambdad

from monai_saliency.data.tolerant import TolerantDataset, tolerant_collate
from monai_saliency.engines.evaluator import FailedStudiesError, SaliencyEvaluator


def _load(path):
    if path.startswith("bad"):
        raise ValueError("corrupt header")
    return torch.full((2, 8, 8), float(len(path)))


def test_bad_studies_skipped_reported_and_raised(cnn2d):
    data = [{"image": "a"}, {"image": "bad1"}, {"image": "ccc"}, {"image": "bad2"}]
    loader = DataLoader(TolerantDataset(data, Lambdad("image", _load)), batch_size=1, collate_fn=tolerant_collate)
    seen = []
    evaluator = SaliencyEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=cnn2d)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    with pytest.raises(FailedStudiesError, match="bad1.*bad2"):
        evaluator.run()
    processed = [o[0]["pred"] for o in seen if o]
    assert len(processed) == 2 and len(evaluator.failures) == 2
    torch.testing.assert_close(processed[1], cnn2d(torch.full((1, 2, 8, 8), 3.0))[0])
