"""ImageSignature / ImageSignatured against scipy, and the foreground-suppression property (seed 001, Appendix A)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft as sfft
import torch
from monai.data import MetaTensor
from scipy.ndimage import gaussian_filter

from monai_saliency.ops.signature import ZERO_TOL_EPS
from monai_saliency.transforms import ImageSignature, ImageSignatured

TOL = ZERO_TOL_EPS * np.finfo(np.float64).eps


def _rec(a: np.ndarray) -> np.ndarray:
    c = sfft.dctn(a, norm="ortho")
    return sfft.idctn(np.where(np.abs(c) > TOL * np.linalg.norm(a), np.sign(c), 0.0), norm="ortho")


def _minmax(m: np.ndarray) -> np.ndarray:
    return (m - m.min()) / (m.max() - m.min())


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).random((3, 24, 30))


def test_reconstruction_matches_scipy_per_channel(image):
    got = ImageSignature(output="reconstruction")(torch.from_numpy(image))
    ref = np.stack([_rec(c) for c in image])
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)


def test_cine_frames_versus_spatial():
    cine = np.random.default_rng(1).random((1, 5, 16, 20))
    per_frame = ImageSignature(output="reconstruction")(cine)
    whole = ImageSignature(output="reconstruction", dct_axes="spatial")(cine)
    np.testing.assert_allclose(per_frame[0], np.stack([_rec(f) for f in cine[0]]), atol=1e-10)
    np.testing.assert_allclose(whole[0], _rec(cine[0]), atol=1e-10)
    assert isinstance(per_frame, np.ndarray) and per_frame.shape == cine.shape


def test_saliency_matches_hou_recipe(image):
    """mean_c rec_c**2, Gaussian blur (sigma = 0.045 * width, mirrored borders), min-max."""
    got = ImageSignature()(torch.from_numpy(image))
    energy = np.mean([_rec(c) ** 2 for c in image], axis=0)
    ref = _minmax(gaussian_filter(energy, 0.045 * image.shape[-1], mode="mirror", truncate=3.0))
    assert got.shape == (1, 24, 30)
    np.testing.assert_allclose(got[0].numpy(), ref, atol=1e-6)


def test_saliency_per_frame_and_no_reduction():
    cine = torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = ImageSignature(smooth="none", reduce_channels=False)(cine)
    energy = np.stack([[_rec(f) ** 2 for f in c] for c in cine.numpy()])
    np.testing.assert_allclose(got.numpy(), _minmax(energy), atol=1e-10)


def test_bilateral_smoothing_option(image):
    got = ImageSignature(smooth="bilateral")(image)
    plain = ImageSignature(smooth="none")(image)
    assert got.shape == plain.shape and np.isfinite(got).all()
    assert 0 < np.abs(got - plain).max() and got.min() == 0 and got.max() == 1


def test_metatensor_and_dictionary_twin():
    img = MetaTensor(torch.rand(1, 16, 16), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    img.meta["filename_or_obj"] = "frame.dcm"
    out = ImageSignatured("image", output_key="signature")({"image": img})
    assert out["image"] is img
    sig = out["signature"]
    assert isinstance(sig, MetaTensor) and sig.shape == (1, 16, 16)
    torch.testing.assert_close(sig.affine, img.affine)
    assert sig.meta["filename_or_obj"] == "frame.dcm"
    torch.testing.assert_close(sig.as_tensor(), ImageSignature()(img.as_tensor()))
    with pytest.raises(ValueError, match="output_key"):
        ImageSignatured(["a", "b"], output_key="c")


def test_constant_image_and_bad_input():
    for value in (0.0, 3.5):
        out = ImageSignature()(torch.full((1, 12, 12), value))
        assert torch.isfinite(out).all() and out.abs().max() == 0
    with pytest.raises(ValueError, match="two spatial"):
        ImageSignature()(torch.rand(1, 16))
    with pytest.raises(ValueError, match="NaN"):
        ImageSignature()(torch.full((1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="smooth"):
        ImageSignature(smooth="median")


def _sparse_fg_on_smooth_bg(rng: np.random.Generator, n: int = 64, bg_coeffs: int = 40, fg_frac: float = 0.02):
    """f: sparse in space (a few % of pixels); b: sparse in the DCT basis (``bg_coeffs`` low-frequency terms)."""
    coeffs = np.zeros((n, n))
    idx = rng.choice(16 * 16, size=bg_coeffs, replace=False)
    coeffs[idx // 16, idx % 16] = rng.normal(0, 1, bg_coeffs)
    b = sfft.idctn(coeffs, norm="ortho")
    f = np.zeros(n * n)
    support = rng.choice(n * n, size=int(fg_frac * n * n), replace=False)
    f[support] = rng.uniform(0.5, 1.0, support.size)
    f = f.reshape(n, n) * 0.5 * np.abs(b).max()  # foreground dimmer than the background peak
    return f, b


def test_foreground_suppression_appendix_a():
    """cos(IDCT(Sig(f + b)), IDCT(Sig(f))) >= 0.5 on average (Hou et al. Prop. 1, seed 001 Appendix A), and the
    squared reconstruction concentrates on the foreground support much more than the image's own energy does."""
    rng = np.random.default_rng(0)
    cos_sig, cos_sal, cos_img = [], [], []
    for _ in range(6):
        f, b = _sparse_fg_on_smooth_bg(rng)
        img = torch.from_numpy(f + b)[None]
        rec = ImageSignature(output="reconstruction")(img)[0].numpy()
        rec_f = _rec(f)
        cos_sig.append(float((rec * rec_f).sum() / (np.linalg.norm(rec) * np.linalg.norm(rec_f))))
        sal = ImageSignature(smooth="none")(img)[0].numpy()
        mask = (f > 0).astype(float)
        cos_sal.append(float((sal * mask).sum() / (np.linalg.norm(sal) * np.linalg.norm(mask))))
        raw = _minmax((f + b) ** 2)
        cos_img.append(float((raw * mask).sum() / (np.linalg.norm(raw) * np.linalg.norm(mask))))
    assert np.mean(cos_sig) >= 0.5
    assert np.mean(cos_sal) > 0.8
    assert np.mean(cos_img) < 0.4


def test_bilateral_options_and_axes_are_checked():
    with pytest.raises(ValueError, match="unknown bilateral"):
        ImageSignature(smooth="bilateral", bilateral={"sigma": 1.0})
    with pytest.raises(TypeError, match="bilateral"):
        ImageSignature(smooth="bilateral", bilateral=0.5)
    with pytest.raises(ValueError, match="zero_tol"):
        ImageSignature(zero_tol=-1.0)
    with pytest.raises(ValueError, match="1 to 3 spatial axes"):
        ImageSignature(dct_axes="spatial")(torch.rand(1, 3, 4, 5, 6))
    assert ImageSignature(dct_axes="frames")(torch.rand(1, 3, 4, 5, 6)).shape == (1, 3, 4, 5, 6)
    custom = ImageSignature(smooth="bilateral", bilateral={"range_sigma": 0.1})(torch.rand(1, 12, 12))
    default = ImageSignature(smooth="bilateral")(torch.rand(1, 12, 12))
    assert custom.shape == default.shape == (1, 12, 12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_image(image, dtype):
    """Computed in float32 (float16's 8 eps would zero many coefficients), returned in the input's dtype."""
    low = torch.as_tensor(image).to(dtype)
    for output in ("saliency", "reconstruction"):
        got = ImageSignature(output=output)(low)
        assert got.dtype == dtype
        ref = ImageSignature(output=output)(low.float())
        torch.testing.assert_close(got.float(), ref, rtol=0, atol=2e-2 if dtype == torch.float16 else 1e-1)


def test_dictionary_twin_missing_keys():
    data = {"image": torch.rand(1, 8, 8), "label": 1}
    out = ImageSignatured(["image", "other"], allow_missing_keys=True)(data)
    assert set(out) == {"image", "label"} and out["image"].shape == (1, 8, 8) and data["image"] is not out["image"]
    with pytest.raises(KeyError, match="other"):
        ImageSignatured(["image", "other"])(data)


def test_float32_reconstruction_matches_float64_signs():
    """A float32 image gives the reconstruction of float64 ``np.sign`` (no threshold) within 1e-4: the default
    threshold (8 eps * ||I_c||) zeroes no coefficient that float32 resolves. This image's coefficients all lie above
    10 eps * ||I_c|| (asserted), while 2 lie below the former 64 eps, which zeroed them (a change of ~0.04)."""
    image = np.random.default_rng(0).random((3, 40, 56))
    c = sfft.dctn(image, axes=(1, 2), norm="ortho")
    rel = np.abs(c) / np.linalg.norm(image, axis=(1, 2), keepdims=True)
    eps = np.finfo(np.float32).eps
    assert rel.min() > (ZERO_TOL_EPS + 2) * eps and (rel <= 64 * eps).sum() > 0
    ref = sfft.idctn(np.sign(c), axes=(1, 2), norm="ortho")
    got = ImageSignature(output="reconstruction")(torch.from_numpy(image).float())
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), ref, atol=1e-4, rtol=0)
    saliency = ImageSignature(smooth="none")(torch.from_numpy(image).float())
    np.testing.assert_allclose(saliency[0].double().numpy(), _minmax(np.mean(ref**2, axis=0)), atol=1e-4, rtol=0)
