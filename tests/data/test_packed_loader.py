"""PackedDataLoader (monai_saliency.data.loader): with workers, the batches of ``num_workers=0`` -- MetaTensor data,
meta, applied_operations, is_batch, strings, tolerant failures, B = 2 with different affines -- reach the main
process as one bytes buffer instead of a shared-memory segment per tensor; with ``num_workers=0`` it is MONAI's
DataLoader. Real components: the angiogram bundle's preprocessing (configs/inference.json) over XA DICOM and NIfTI
cines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor, decollate_batch
from monai.transforms import Compose, Invertd, RandGaussianNoised
from monai.utils import set_determinism
from torch.utils.data.dataloader import _SingleProcessDataLoaderIter

from monai_saliency.data import PackedDataLoader
from monai_saliency.data.loader import pack_batch, unpack_batch
from monai_saliency.data.tolerant import FAILED_KEY, TolerantDataset, tolerant_collate

SAMPLES = Path(__file__).resolve().parents[2] / "bundles" / "angiogram_signature_activation" / "sample_data"


def assert_same(a, b, where: str = "batch") -> None:
    """``a`` and ``b`` are equal down to types, dtypes, shapes, dict key order and MetaTensor attributes."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a.shape} {a.dtype} != {b.shape} {b.dtype}"
        plain = (a.as_subclass(torch.Tensor), b.as_subclass(torch.Tensor))
        torch.testing.assert_close(*plain, rtol=0, atol=0, equal_nan=True, msg=where)
        if type(a) is not torch.Tensor:  # MetaTensor: meta, applied_operations, is_batch, pending operations
            assert_same(a.__dict__, b.__dict__, f"{where}.__dict__")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The angiogram bundle's preprocessing (frame size 32 x 32, so that Invertd resizes back) and a datalist in
    pairs: two XA DICOM cines; the sample NIfTI cine and a NIfTI cine with another affine; an unreadable study and
    a third NIfTI cine with a third affine."""
    from benchmarks.speed.bench_cohort_throughput import bundle_parser
    from monai_saliency.data.checks import mark_nifti_cine
    from monai_saliency.data.nifti import save_nifti
    from monai_saliency.data.synthetic.angiogram import make_angiogram_dataset

    folder = tmp_path_factory.mktemp("packed_loader")
    cines = make_angiogram_dataset(2, shape=(64, 64), frames=16, seed=22).cine
    affines = [np.diag([1.0, 0.4, 0.4, 1.0]), np.diag([1.0, 0.25, 0.3, 1.0])]
    affines[0][:3, 3], affines[1][:3, 3] = (2.0, -12.8, -12.8), (0.0, -8.0, 5.0)
    made = []
    for i, (cine, affine) in enumerate(zip(cines, affines)):
        made.append(mark_nifti_cine(save_nifti(cine[None], folder / f"made_{i}.nii.gz", affine=affine)))
    (folder / "broken.nii.gz").write_bytes(b"not a NIfTI file")
    paths = [SAMPLES / "case_000.dcm", SAMPLES / "case_001.dcm", SAMPLES / "case_004.nii.gz", made[0]]
    paths += [folder / "broken.nii.gz", made[1]]
    parser = bundle_parser(folder, folder / "out", frame_size=[32, 32])
    preprocessing = parser.get_parsed_content("preprocessing")
    return preprocessing, [{"study": p.name, "image": str(p)} for p in paths]


def _batches(loader_cls, data, transform, num_workers: int, **kwargs) -> list:
    loader = loader_cls(TolerantDataset(data, transform=transform), num_workers=num_workers, **kwargs)
    return list(loader)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_worker_batches_equal_in_process_batches(bundle, batch_size):
    """XA DICOM and NIfTI cines, B = 1 and B = 2 (one batch of two NIfTI cines with different affines, one with a
    failed study): every batch is the in-process one, and so is Invertd of a map on the decollated items."""
    preprocessing, data = bundle
    kwargs = {"batch_size": batch_size, "collate_fn": tolerant_collate}
    expected = _batches(DataLoader, data, preprocessing, 0, **kwargs)
    packed = _batches(PackedDataLoader, data, preprocessing, 1, **kwargs)
    assert len(packed) == len(expected) == 6 // batch_size
    assert_same(packed, expected)
    if batch_size == 2:
        affines = packed[1]["image"].affine
        assert affines.shape == (2, 4, 4) and not torch.equal(affines[0], affines[1])
        assert packed[1]["image"].is_batch and packed[1]["image"].meta["filename_or_obj"][1].endswith("made_0.nii.gz")
    invert = Invertd(keys="map", transform=preprocessing, orig_keys="image", nearest_interp=False)
    for got, want in zip(packed, expected):
        if "image" not in got:
            continue
        good = [{k: v for k, v in batch.items() if k != FAILED_KEY} for batch in (got, want)]  # as the evaluator
        for item_got, item_want in zip(*map(decollate_batch, good)):
            maps = [invert({**item, "map": item["image"] ** 2}) for item in (item_got, item_want)]
            assert maps[0]["map"].shape == (1, 16, 64, 64)  # resized back from 32 x 32 to the cine's frames
            assert_same(maps[0]["map"], maps[1]["map"], "inverted map")


def test_a_study_that_fails_to_load_arrives_as_its_failure_record(bundle):
    preprocessing, data = bundle
    batches = _batches(PackedDataLoader, data[4:], preprocessing, 1, batch_size=2, collate_fn=tolerant_collate)
    assert len(batches) == 1
    [(name, error)] = batches[0][FAILED_KEY]
    assert name == "broken.nii.gz" and error
    assert batches[0]["image"].shape == (1, 1, 16, 32, 32)
    assert batches[0]["study"] == ["made_1.nii.gz"]
    expected = _batches(DataLoader, data[4:], preprocessing, 0, batch_size=2, collate_fn=tolerant_collate)
    assert_same(batches, expected)


def _collate_noting_shared_memory(items: list) -> dict:
    """``tolerant_collate`` that records, in the worker, whether the collated image is in shared memory."""
    batch = tolerant_collate(items)
    batch["collated_in_shared_memory"] = batch["image"].is_shared()
    return batch


def test_packed_batches_skip_shared_memory(bundle):
    """The mechanism: torch's worker batches live in shared memory (one segment per tensor, the meta's too); the
    packed loader's worker collates in private memory and its batches in the main process are not shared."""
    preprocessing, data = bundle
    kwargs = {"batch_size": 1, "collate_fn": _collate_noting_shared_memory}
    plain = _batches(DataLoader, data[:3], preprocessing, 1, **kwargs)
    packed = _batches(PackedDataLoader, data[:3], preprocessing, 1, **kwargs)
    in_process = _batches(DataLoader, data[:3], preprocessing, 0, **kwargs)
    for batch in plain:
        assert batch["collated_in_shared_memory"]
        assert batch["image"].is_shared() and batch["cine"].is_shared() and batch["image"].affine.is_shared()
    for batch in packed:
        assert not batch["collated_in_shared_memory"]
        tensors = [batch["image"], batch["cine"], batch["image"].affine, *batch["image"].meta.values()]
        assert not any(t.is_shared() for t in tensors if isinstance(t, torch.Tensor))
    for batch in in_process:
        assert not batch["collated_in_shared_memory"]
    assert_same(packed, in_process)
    assert_same([{**b, "collated_in_shared_memory": False} for b in plain], in_process)


def test_without_workers_it_is_monai_dataloader(bundle):
    """``num_workers=0``: torch's single-process iterator, and MONAI's seeding of random transforms at
    construction (the same noise as DataLoader after the same seed); with a worker, the same noise as DataLoader's
    worker."""
    preprocessing, data = bundle
    transform = Compose([*preprocessing.transforms, RandGaussianNoised("image", prob=1.0, std=0.1)])
    loader = PackedDataLoader(TolerantDataset(data[:2], transform=transform), collate_fn=tolerant_collate)
    assert type(iter(loader)) is _SingleProcessDataLoaderIter
    runs = {}
    for cls in (DataLoader, PackedDataLoader):
        for workers in (0, 1):
            set_determinism(seed=7)
            runs[cls.__name__, workers] = _batches(cls, data[:2], transform, workers, collate_fn=tolerant_collate)
    set_determinism(seed=None)
    assert_same(runs["PackedDataLoader", 0], runs["DataLoader", 0])
    assert_same(runs["PackedDataLoader", 1], runs["DataLoader", 1])
    assert not torch.equal(runs["DataLoader", 0][0]["image"], runs["DataLoader", 0][1]["image"])


def test_a_collate_error_is_raised_as_with_dataloader(bundle):
    """Studies of different shapes in one batch: the worker's ValueError, naming them, re-raised in the main
    process as DataLoader does."""
    preprocessing, data = bundle
    native = Compose(preprocessing.transforms[:3])  # no resizing: 32 x 32 would give every study one shape
    mixed = [data[0], {"study": "small", "image": data[3]["image"]}]
    small = Compose([*native.transforms, lambda d: {**d, "image": d["image"][..., :40]}])
    dataset = TolerantDataset(mixed, transform=lambda d: small(d) if d["study"] == "small" else native(d))
    for cls in (DataLoader, PackedDataLoader):
        iterator = iter(cls(dataset, batch_size=2, num_workers=1, collate_fn=tolerant_collate))
        with pytest.raises(ValueError, match="different shapes") as err:
            next(iterator)
        assert "worker process 0" in str(err.value) and "case_000.dcm (1, 16, 64, 64)" in str(err.value)
        assert next(iterator, None) is None  # that was the one batch; the worker ends now, not at a join timeout


def test_pack_round_trip_keeps_types_strides_and_aliases():
    """Tensors numpy holds come back equal and writable; the rest (bfloat16, requires_grad, a transposed view)
    fall back to torch's pickling, exact too; one tensor referenced twice comes back as one object."""
    affine = torch.eye(4, dtype=torch.float64)
    meta_tensor = MetaTensor(torch.arange(6.0).reshape(1, 2, 3), affine=affine, meta={"spacing": np.ones(3)})
    meta_tensor.is_batch = True
    batch = {
        "image": meta_tensor,
        "labels": torch.tensor([1, 0], dtype=torch.uint8),
        "half": torch.ones(2, dtype=torch.bfloat16),
        "grad": torch.ones(2, requires_grad=True),
        "transposed": torch.arange(6).reshape(2, 3).t(),
        "same": [affine, affine],
        "names": ("a", "b"),
    }
    out = unpack_batch(pack_batch(batch))
    assert_same(out["image"], batch["image"])
    assert out["image"].is_batch and out["image"].meta["affine"] is not affine
    for key in ("labels", "half", "grad", "transposed", "names"):
        assert_same(out[key], batch[key], key)
    assert out["grad"].requires_grad and out["transposed"].stride() == (1, 3)
    assert out["same"][0] is out["same"][1]
    out["labels"] += 1  # writable memory (no warning, no error)
    assert out["labels"].tolist() == [2, 1]


@pytest.mark.cuda
def test_pin_memory_pins_the_unpacked_batch(bundle):
    preprocessing, data = bundle
    [batch] = _batches(PackedDataLoader, data[:1], preprocessing, 1, collate_fn=tolerant_collate, pin_memory=True)
    assert batch["image"].is_pinned() and batch["cine"].is_pinned() and isinstance(batch["image"], MetaTensor)


def test_the_bundles_inference_configs_use_it():
    import json
    import pydoc

    configs = sorted((SAMPLES.parents[1]).glob("*/configs/inference*.json"))
    loaders = {p: json.loads(p.read_text()).get("dataloader") for p in configs}
    targets = {p.parent.parent.name + "/" + p.name: d["_target_"] for p, d in loaders.items() if d}
    assert len(targets) == 3, targets  # angiogram inference, gradient_saliency_3d inference and segmentation
    assert all(pydoc.locate(t) is PackedDataLoader for t in targets.values()), targets
