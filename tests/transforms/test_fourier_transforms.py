from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_saliency.transforms import FourierLowPass, FourierLowPassd


def _numpy_lowpass(a: np.ndarray, sigma: float) -> np.ndarray:
    """Independent reference on a channel-first array: complex FFT, hard radial mask, inverse."""
    sp = a.shape[1:]
    axes = tuple(range(1, a.ndim))
    freqs = np.meshgrid(*[np.fft.fftfreq(n) * n for n in sp], indexing="ij")
    mask = np.sqrt(sum(f**2 for f in freqs)) <= sigma
    return np.fft.ifftn(np.fft.fftn(a, axes=axes) * mask, axes=axes).real


@pytest.mark.parametrize("shape", [(2, 9, 12), (1, 5, 6, 7), (3, 17)])
def test_matches_numpy_reference(shape):
    a = np.random.default_rng(0).normal(size=shape)
    out = FourierLowPass(2.2)(a)
    assert isinstance(out, np.ndarray) and out.shape == shape
    np.testing.assert_allclose(out, _numpy_lowpass(a, 2.2), atol=1e-10)
    assert not np.allclose(out, a)


def test_identity_for_large_sigma_and_metatensor_kept():
    affine = torch.diag(torch.tensor([2.0, 3, 1, 1]))
    img = MetaTensor(torch.randn(2, 8, 10), meta={"filename_or_obj": "x.nii"}, affine=affine)
    out = FourierLowPass(10)(img)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.nii"
    torch.testing.assert_close(out.affine, img.affine)
    torch.testing.assert_close(out.as_tensor(), img.as_tensor(), rtol=0, atol=0)


def test_dictionary_twin_and_integer_input():
    data = {"sal": torch.arange(2 * 6 * 6).reshape(2, 6, 6), "other": torch.zeros(1)}
    out = Compose([FourierLowPassd("sal", sigma=1.5)])(data)
    assert out["sal"].dtype == torch.float32
    np.testing.assert_allclose(out["sal"].numpy(), _numpy_lowpass(data["sal"].numpy().astype(float), 1.5), atol=1e-4)
    assert out["other"] is data["other"]
    with pytest.raises(KeyError):
        FourierLowPassd("missing", sigma=1)(data)
    assert FourierLowPassd("missing", sigma=1, allow_missing_keys=True)(data).keys() == data.keys()


def test_bad_arguments():
    for bad in (0, -2, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            FourierLowPass(bad)
    with pytest.raises(ValueError, match="channel-first"):
        FourierLowPass(2)(torch.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        FourierLowPass(2)(torch.full((1, 4, 4), float("inf")))
