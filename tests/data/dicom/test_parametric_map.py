from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor, image_writer
from monai.transforms import LoadImage, Orientation, SaveImage

from monai_saliency.data.dicom.parametric_map import (
    ParametricMapWriter,
    read_parametric_map,
    register_parametric_map_writer,
)
from monai_saliency.data.dicom.pet_series import write_pet_series
from monai_saliency.data.synthetic.pet_phantom import make_pet_study

PM_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


def _affine() -> torch.Tensor:
    c, s = np.cos(0.3), np.sin(0.3)
    return torch.as_tensor([[2 * c, -2 * s, 0, -12.0], [2 * s, 2 * c, 0, 7.0], [0, 0, 3.125, -20.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pt") / "series"
    study = make_pet_study("rest_task", shape=(12, 14, 10), n_subjects=1, n_scans=2, seed=5)
    write_pet_series(study.images.as_tensor()[1], folder, _affine())
    return folder


def _loaded_map(series):
    img = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=True)(str(series))
    sal = img.float() ** 2 - 0.3 * img.float()  # any real-valued map on the series' grid, negative values included
    return img, sal


def _sop_uids(series):
    return {pydicom.dcmread(str(p)).SOPInstanceUID for p in series.iterdir()}


def _check_pm(path, series, expected):
    ds = pydicom.dcmread(str(path))
    assert ds.SOPClassUID == PM_STORAGE
    refs = {i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert refs == _sop_uids(series)
    first = pydicom.dcmread(str(next(series.iterdir())))
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID and ds.StudyInstanceUID == first.StudyInstanceUID
    back = read_parametric_map(path)
    torch.testing.assert_close(back[0], torch.as_tensor(expected).float(), atol=1e-5, rtol=1e-5)
    return back


def test_saveimage_with_writer_references_the_series(series, tmp_path):
    img, sal = _loaded_map(series)
    SaveImage(
        output_dir=str(tmp_path),
        output_ext=".dcm",
        writer=ParametricMapWriter,
        output_dtype=None,
        separate_folder=False,
        print_log=False,
    )(sal)
    written = list(tmp_path.glob("*.dcm"))
    assert len(written) == 1
    back = _check_pm(written[0], series, sal[0])
    torch.testing.assert_close(back.affine.double(), img.affine.double(), atol=1e-4, rtol=0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_reoriented_map_is_written_on_the_series_grid(series, tmp_path):
    img, sal = _loaded_map(series)
    flipped = Orientation(axcodes="LPI")(sal)  # axis flips/permutation + a new affine
    assert not torch.allclose(flipped.affine.double(), img.affine.double())
    SaveImage(
        output_dir=str(tmp_path),
        output_ext=".dcm",
        writer=ParametricMapWriter,
        output_dtype=None,
        separate_folder=False,
        print_log=False,
    )(flipped, filename=str(tmp_path / "map"))
    _check_pm(tmp_path / "map.dcm", series, sal[0])


def test_registered_for_dcm(series, tmp_path):
    saved = dict(image_writer.SUPPORTED_WRITERS)
    try:
        register_parametric_map_writer()
        saver = SaveImage(
            output_dir=str(tmp_path), output_ext=".dcm", output_dtype=None, separate_folder=False, print_log=False
        )
        assert saver.writers[0] is ParametricMapWriter
        _, sal = _loaded_map(series)
        saver(sal, filename=str(tmp_path / "reg"))
        _check_pm(tmp_path / "reg.dcm", series, sal[0])
    finally:
        image_writer.SUPPORTED_WRITERS.clear()
        image_writer.SUPPORTED_WRITERS.update(saved)


def test_meta_source_series_and_labels(series, tmp_path):
    _, sal = _loaded_map(series)
    values = sal.as_tensor()[0]
    meta = {"source_series": str(next(series.iterdir())), "parametric_map_label": "morch_exact"}  # one file of it
    w = ParametricMapWriter()
    w.set_data_array(values, channel_dim=None)
    w.set_metadata(meta)
    w.write(tmp_path / "pm.dcm")
    ds = _check_pm(tmp_path / "pm.dcm", series, values)
    assert ds is not None
    rwv = pydicom.dcmread(str(tmp_path / "pm.dcm")).SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert rwv.LUTLabel == "morch_exact"


def test_bad_inputs(series, tmp_path):
    _, sal = _loaded_map(series)
    w = ParametricMapWriter()
    with pytest.raises(ValueError, match="one channel"):
        w.set_data_array(torch.cat([sal, sal]))
    bad = sal.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        w.set_data_array(bad)
    w.set_data_array(sal.as_tensor())
    with pytest.raises(ValueError, match="source series"):
        w.set_metadata({})
    w.set_data_array(sal.as_tensor()[:, :-1])
    with pytest.raises(ValueError, match="does not match"):
        w.set_metadata({"source_series": str(series)})
    shifted = sal.affine.clone()
    shifted[0, 3] += 5.0  # same axes, another position: needs resampling, not a flip
    w.set_data_array(sal.as_tensor())
    with pytest.raises(ValueError, match="resample"):
        w.set_metadata({"source_series": str(series), "affine": shifted})
    # never over a source file, and nothing left behind
    w.set_metadata({"source_series": str(series)})
    target = next(series.iterdir())
    before = target.read_bytes()
    with pytest.raises(FileExistsError):
        w.write(target)
    assert target.read_bytes() == before
    assert not [p for p in series.iterdir() if p.name.startswith(".")]


def test_metatensor_meta_from_loader_is_enough(series, tmp_path):
    img, _ = _loaded_map(series)
    sal = MetaTensor(torch.rand(img.shape), meta=dict(img.meta))  # e.g. a map wrapped like its input
    SaveImage(
        output_dir=str(tmp_path),
        output_ext=".dcm",
        writer=ParametricMapWriter,
        output_dtype=None,
        separate_folder=False,
        print_log=False,
    )(sal, filename=str(tmp_path / "r"))
    _check_pm(tmp_path / "r.dcm", series, sal[0])
