from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_saliency.methods.structured import structured_prox
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.transforms import StructuredProx, StructuredProxd


@pytest.fixture
def grad() -> torch.Tensor:
    return torch.randn(3, 10, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("solver", ["seed", "exact"])
def test_equals_batched_prox(grad, solver):
    s, _ = structured_prox(grad[None], solver=solver)
    t = StructuredProx(solver=solver, output="structured")
    torch.testing.assert_close(t(grad), s[0])
    m = StructuredProx(solver=solver)(grad)
    torch.testing.assert_close(m, minmax_normalize(torch.linalg.vector_norm(s, dim=1, keepdim=True))[0])
    assert m.shape == (1, 10, 9) and t.last_info["objective"].shape == (1,)


def test_metatensor_numpy_and_dictionary(grad):
    mt = MetaTensor(grad, meta={"filename_or_obj": "g.nii"})
    out = StructuredProx()(mt)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "g.nii"
    np_out = StructuredProx()(grad.numpy())
    assert isinstance(np_out, np.ndarray)
    np.testing.assert_allclose(np_out, out.as_tensor().numpy())
    d = StructuredProxd(keys="g", solver="exact", output="structured")({"g": grad, "x": 1})
    assert d["x"] == 1 and d["g"].shape == grad.shape


def test_bad_input():
    with pytest.raises(ValueError, match="lambda_l1"):
        StructuredProx(lambda_l1=-1)
    with pytest.raises(ValueError, match="channel-first"):
        StructuredProx()(torch.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        StructuredProx()(torch.full((1, 4, 4), float("nan")))
    zero = StructuredProx()(torch.zeros(2, 5, 5))
    assert torch.equal(zero, torch.zeros(1, 5, 5))
