"""Every explainer on collated MetaTensor batches from a real MONAI DataLoader (B > 1, a different affine per item):
the map is a batched MetaTensor with each item's own metadata, and ``decollate_batch`` + ``Invertd`` +
``SaveImaged`` write each item's map on that item's original grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, decollate_batch
from monai.transforms import Invertd, SaveImaged

from monai_saliency.methods import (
    EigenCAM,
    FORGrad,
    GradCAM,
    GradCAMpp,
    IntegratedGradients,
    SignatureActivation,
    SmoothGrad,
    StructuredGradient,
    VanillaGrad,
    wrap_like,
)

SIZE = (8, 8, 8)
LAYER = "features.7"
N_SMOOTH = 3

EXPLAINERS = {
    "vanillagrad": lambda net: VanillaGrad(net),
    "smoothgrad": lambda net: SmoothGrad(net, n_samples=N_SMOOTH, batch_size=4),
    "integratedgradients": lambda net: IntegratedGradients(net, n_steps=4, batch_size=8),
    "forgrad": lambda net: FORGrad(VanillaGrad(net), sigma=2.0, reduce="abs_sum"),
    "structured": lambda net: StructuredGradient(VanillaGrad(net), steps=2),
    # the exact solver stops per item: each item's map is the one it gets alone
    "structured_exact": lambda net: StructuredGradient(VanillaGrad(net), solver="exact", tol=1e-6),
    "gradcam": lambda net: GradCAM(net, target_layers=LAYER),
    "gradcampp": lambda net: GradCAMpp(net, target_layers=LAYER),
    "eigencam": lambda net: EigenCAM(net, target_layers=LAYER),
    "sigact": lambda net: SignatureActivation(net, target_layers=LAYER),
}


def _op_classes(ops: list) -> list[list[str]]:
    return [[op["class"] for op in item_ops] for item_ops in ops]


def _item_kwargs(name: str, b: int) -> list[dict]:
    """Keyword arguments of the batch call (first) and of each single-item call: SmoothGrad gets injected noise,
    so the batch map can be compared with the maps of its items one at a time."""
    if name != "smoothgrad":
        return [{}] * (b + 1)
    noise = 0.1 * torch.randn(N_SMOOTH, b, 1, *SIZE, generator=torch.Generator().manual_seed(b))
    return [{"noise": noise}] + [{"noise": noise[:, i : i + 1]} for i in range(b)]


@pytest.mark.parametrize("batch_size", [2, 3])
@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_batched_metatensor_keeps_each_items_metadata_and_geometry(name, batch_size, cnn3d, nifti_batches, tmp_path):
    loaded, pre = nifti_batches(batch_size, SIZE)
    sizes = []
    with EXPLAINERS[name](cnn3d) as explainer:
        for n_batch, batch in enumerate(loaded):
            x = batch["image"]
            b = x.shape[0]
            sizes.append(b)
            assert isinstance(x, MetaTensor) and x.is_batch and x.affine.shape == (b, 4, 4)
            kwargs = _item_kwargs(name, b)
            maps = explainer(x, **kwargs[0])

            assert isinstance(maps, MetaTensor) and maps.is_batch
            assert maps.shape[0] == b and tuple(maps.shape[2:]) == SIZE
            torch.testing.assert_close(maps.affine, x.affine, rtol=0, atol=0)
            assert maps.meta["filename_or_obj"] == x.meta["filename_or_obj"]
            assert _op_classes(maps.applied_operations) == _op_classes(x.applied_operations)
            assert maps.applied_operations is not x.applied_operations  # a copy: inverting the map leaves x alone
            # the same values as the items explained one at a time, as plain tensors
            ref = torch.cat([explainer(x.as_tensor()[i : i + 1], **kwargs[i + 1]) for i in range(b)])
            torch.testing.assert_close(maps.as_tensor(), ref, rtol=1e-4, atol=1e-5)

            batch[name] = maps
            for i, item in enumerate(decollate_batch(batch)):
                src = Path(item["image"].meta["filename_or_obj"])
                m = item[name]
                assert isinstance(m, MetaTensor) and not m.is_batch
                torch.testing.assert_close(m.affine, x.affine[i], rtol=0, atol=0)
                assert m.meta["filename_or_obj"] == str(src)
                inverted = Invertd(keys=name, transform=pre, orig_keys="image", nearest_interp=False)(item)
                out_dir = tmp_path / f"batch{n_batch}"
                SaveImaged(
                    keys=name, output_dir=str(out_dir), output_postfix=name, separate_folder=False, print_log=False
                )(inverted)
                stem = src.name.split(".")[0]
                written = nib.load(str(out_dir / f"{stem}_{name}.nii.gz"))
                original = nib.load(str(src))
                assert written.shape == original.shape, (src.name, written.shape, original.shape)
                np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
                assert np.isfinite(written.get_fdata()).all()
    assert sizes == ([2, 1] if batch_size == 2 else [3])  # a full batch, and a last short batch for B=2


def test_nibabel_files_differ_in_affine_and_shape(nibabel_files):
    """The premise of the batch tests: the items' original grids all differ."""
    headers = [nib.load(str(f)) for f in nibabel_files]
    for i in range(len(headers)):
        for j in range(i):
            assert not np.allclose(headers[i].affine, headers[j].affine)
            assert headers[i].shape != headers[j].shape


def test_wrap_like_batched_is_a_deep_copy(nifti_batches, nibabel_files):
    x = nifti_batches(3, SIZE)[0][0]["image"]
    maps = wrap_like(torch.zeros(3, 1, *SIZE), x)
    maps.affine[0, 0, 0] = 123.0
    maps.applied_operations[0].clear()
    maps.meta["filename_or_obj"][1] = "changed"
    assert x.affine[0, 0, 0] != 123.0
    assert len(x.applied_operations[0]) == len(maps.applied_operations[1])
    assert x.meta["filename_or_obj"][1] == str(nibabel_files[1])
    plain = torch.zeros(1, 1, 2)
    assert wrap_like(plain, torch.zeros(1, 1, 2)) is plain  # a plain ``like``: the maps as they are
