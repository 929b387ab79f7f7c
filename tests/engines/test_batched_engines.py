"""SaliencyInferer and SaliencyHandler on collated MetaTensor batches from a MONAI DataLoader (B > 1, one affine per
item, metadata as LoadImaged writes it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.engines import SupervisedEvaluator
from monai.transforms import Invertd

from monai_saliency.engines.handlers import SaliencyHandler
from monai_saliency.engines.inferers import SaliencyInferer
from monai_saliency.methods import GradCAM, VanillaGrad

SIZE = (8, 8, 8)
FACTORIES = {
    "grad": lambda net: VanillaGrad(net, reduce="abs_sum"),
    "cam": lambda net: GradCAM(net, target_layers="features.7"),
}


def _map_of(output: Mapping, key: str) -> torch.Tensor:
    """A map from an evaluator's per-item output: a top-level key, or a key of the ``pred`` dict."""
    if key in output:
        return output[key]
    return output["pred"][key]


def _check_on_original_grid(item: dict, key: str, pre) -> None:
    src = Path(item["image"].meta["filename_or_obj"])
    inverted = Invertd(keys=key, transform=pre, orig_keys="image", nearest_interp=False)(dict(item))[key]
    original = nib.load(str(src))
    assert tuple(inverted.shape) == (1, *original.shape), (key, src.name)
    np.testing.assert_allclose(inverted.affine.numpy(), original.affine, atol=1e-5)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_inferer_on_batched_metatensor(batch_size, cnn3d, nifti_batches):
    batches, pre = nifti_batches(batch_size, SIZE)
    inferer = SaliencyInferer(dict(FACTORIES))
    for batch in batches:
        x = batch["image"]
        with torch.no_grad():  # as in an evaluator
            out = inferer(x, cnn3d)
        classes = cnn3d(x.as_tensor()).argmax(1)
        for key, factory in FACTORIES.items():
            maps = out[key]
            assert isinstance(maps, MetaTensor) and maps.is_batch and maps.shape[0] == x.shape[0]
            torch.testing.assert_close(maps.affine, x.affine, rtol=0, atol=0)
            assert maps.meta["filename_or_obj"] == x.meta["filename_or_obj"]
            with factory(cnn3d) as explainer:
                torch.testing.assert_close(maps.as_tensor(), explainer(x.as_tensor(), class_idx=classes))
        for i, item in enumerate(decollate_batch({"image": x, **{k: out[k] for k in FACTORIES}})):
            for key in FACTORIES:
                torch.testing.assert_close(item[key].affine, x.affine[i], rtol=0, atol=0)
                _check_on_original_grid(item, key, pre)
    inferer.close()


def test_inferer_in_evaluator_with_batch_of_three(cnn3d, nifti_batches, nibabel_files):
    _, pre = nifti_batches(3, SIZE)
    loader = DataLoader(Dataset([{"image": str(f)} for f in nibabel_files], transform=pre), batch_size=3)
    inferer = SaliencyInferer(dict(FACTORIES))
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=cnn3d, inferer=inferer)
    evaluator.run()
    outputs, items = evaluator.state.output, evaluator.state.batch
    assert len(outputs) == len(items) == 3
    for out, item in zip(outputs, items):
        for key in FACTORIES:
            m = _map_of(out, key)
            assert isinstance(m, MetaTensor) and not m.is_batch
            torch.testing.assert_close(m.affine, item["image"].affine, rtol=0, atol=0)
            _check_on_original_grid({"image": item["image"], key: m}, key, pre)
    inferer.close()


def test_handler_with_batched_probe_writes_each_item_with_its_affine(cnn3d, nifti_batches, tmp_path):
    probe = nifti_batches(3, SIZE)[0][0]["image"]
    handler = SaliencyHandler(FACTORIES["grad"], probe, output_dir=tmp_path, network=cnn3d)
    engine = Engine(lambda _engine, _batch: None)
    handler.attach(engine)
    engine.run([0], max_epochs=1)
    handler.close()
    assert len(handler.written) == 3
    for i, path in enumerate(sorted(handler.written)):
        img = nib.load(str(path))
        assert img.shape == SIZE
        np.testing.assert_allclose(img.affine, probe.affine[i].numpy(), atol=1e-6)
    assert len({tuple(np.round(nib.load(str(p)).affine.ravel(), 4)) for p in handler.written}) == 3
