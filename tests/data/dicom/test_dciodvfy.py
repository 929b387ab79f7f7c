"""Every DICOM object the project writes passes the standard's validator ``dciodvfy`` (dicom3tools) with 0 errors.

Objects are written through the code paths the bundles use: the XA cine writer of ``prepare.py``, the angiogram
bundle's ``SaveXADerivedd`` (with the bundle's own long derivation description), the PT series writer of the PET
sample (``save_pet_study_dicom``) and the PET bundle's ``parametric_map_saver``; the shipped sample files are checked
as they are. Warnings are accepted (listed in the report of issue #21): the derived XA's Rescale Slope/Intercept/Type,
which the classic XA IOD does not list (MONAI reads the map's values through them), and highdicom's ``QUANTITY``
image/frame type of the Parametric Map, a term dicom3tools does not know.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from monai_saliency.data.dicom.parametric_map import parametric_map_saver
from monai_saliency.data.dicom.pet_series import read_pet_series
from monai_saliency.data.dicom.xa_writer import write_xa_cine
from monai_saliency.data.synthetic.pet_phantom import make_pet_study, save_pet_study_dicom
from tests._system_tools import require_tool

REPO = Path(__file__).resolve().parents[3]
ANGIO = REPO / "bundles" / "angiogram_signature_activation"
PET_SAMPLE = REPO / "bundles" / "pet_morch_saliency" / "sample_data"
# the bundle's own description: longer than SeriesDescription's 64 characters
DESCRIPTION = json.loads((ANGIO / "configs" / "inference.json").read_text())["derived_description"]


def assert_valid(path: Path, iod: str) -> None:
    """``dciodvfy path`` recognises the IOD ``iod`` and reports no error (the errors are the assertion message)."""
    errors = dciodvfy_errors(path, iod)
    assert not errors, f"dciodvfy {path.name}:\n" + "\n".join(errors)


def dciodvfy_errors(path: Path, iod: str) -> list[str]:
    """The ``Error`` lines of ``dciodvfy path``; fails if the file is not recognised as the IOD ``iod``."""
    exe = require_tool("dciodvfy", "dicom3tools")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    assert iod in [line.strip() for line in lines], f"{path.name} not validated as {iod}:\n" + "\n".join(lines)
    errors = [line for line in lines if line.startswith("Error")]
    assert (run.returncode == 0) == (not errors), (run.returncode, lines)
    return errors


def _cine_io():
    spec = importlib.util.spec_from_file_location("_conform_cine_io", ANGIO / "scripts" / "cine_io.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blob_map(shape: tuple[int, ...], scale: float) -> torch.Tensor:
    """A smooth moving blob (T, H, W) times ``scale``: a saliency-like map with a narrow value range."""
    t, h, w = shape
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return scale * torch.exp(-((yy - h / 3 - tt) ** 2 + (xx - w / 2) ** 2) / (0.05 * h * w)).float()


@pytest.fixture(scope="module")
def xa(tmp_path_factory):
    """A cine written as prepare.py does, and its derived map written by the bundle's SaveXADerivedd."""
    folder = tmp_path_factory.mktemp("xa")
    cine = torch.rand(6, 24, 20, generator=torch.Generator().manual_seed(0))
    src = write_xa_cine(cine, folder / "cine.dcm", bits_stored=12, uid_seed="conform-xa")
    cine_io = _cine_io()
    loaded = cine_io.LoadCined("image")({"image": str(src)})["image"]
    sal = MetaTensor(_blob_map(tuple(loaded.shape[1:]), 1e-3)[None], meta=dict(loaded.meta))
    out = folder / "out"
    cine_io.SaveXADerivedd("sigact_spatial", output_dir=out, description=DESCRIPTION)({"sigact_spatial": sal})
    (derived,) = out.glob("*.dcm")
    return src, derived, sal


@pytest.fixture(scope="module")
def pet(tmp_path_factory):
    """A PT series written as the PET sample is, and a Parametric Map on it written as the PET bundle does."""
    folder = tmp_path_factory.mktemp("pet")
    study = make_pet_study("rest_task", shape=(10, 12, 8), n_subjects=2, n_scans=2, seed=3)
    series = save_pet_study_dicom(study, folder / "study")[0]
    vol, _ = read_pet_series(series)
    sal = 1e-4 * (vol.float() ** 2 - 0.3 * vol.float())  # negative values and a range far below 1, as Morch maps
    meta = {
        "source_series": str(series),
        "affine": vol.affine.clone(),
        "parametric_map_label": "morch_exact",
        "parametric_map_description": "Morch saliency (exact order): training cost change",
    }
    parametric_map_saver(folder / "out")(MetaTensor(sal.as_tensor(), meta=meta), filename=str(folder / "out" / "pm"))
    return series, folder / "out" / "pm.dcm", sal


def test_xa_cine_has_no_error(xa):
    src, _, _ = xa
    assert_valid(src, "XAImage")


def test_derived_xa_has_no_error(xa):
    _, derived, _ = xa
    assert_valid(derived, "XAImage")


def test_derived_xa_copies_the_acquisition_and_references_the_source(xa):
    src, derived, _ = xa
    s, d = pydicom.dcmread(src), pydicom.dcmread(derived)
    for kw in ("XRayTubeCurrent", "ExposureTime", "Exposure", "KVP", "BodyPartExamined", "RadiationSetting"):
        assert kw in s and d.get(kw) == s.get(kw), kw
    for kw in ("PatientID", "StudyInstanceUID", "PositionerPrimaryAngle", "ImagerPixelSpacing", "FrameTime"):
        assert d.get(kw) == s.get(kw), kw
    (ref,) = d.SourceImageSequence
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (s.SOPClassUID, s.SOPInstanceUID)
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    (series_ref,) = d.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == s.SeriesInstanceUID
    assert series_ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == s.SOPInstanceUID
    new = (d.SOPInstanceUID, d.SeriesInstanceUID)
    assert not set(new) & {s.SOPInstanceUID, s.SeriesInstanceUID, s.StudyInstanceUID}
    assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
    assert list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"]


def test_derived_xa_window_shows_the_map(xa):
    """The window covers the map's value range (after the rescale) without being much wider, so pydicom's display
    pipeline (Modality LUT, then VOI LUT) uses the whole grey range; a missing window shows it black."""
    _, derived, sal = xa
    ds = pydicom.dcmread(derived)
    assert "WindowCenter" in ds and "WindowWidth" in ds, "no display window: viewers render the map black"
    values = apply_modality_lut(ds.pixel_array, ds)
    lo, hi = float(values.min()), float(values.max())
    np.testing.assert_allclose([lo, hi], [float(sal.min()), float(sal.max())], atol=2 * float(ds.RescaleSlope))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert ds.VOILUTFunction == "LINEAR_EXACT" or width >= 1
    assert center - width / 2 <= lo and center + width / 2 >= hi, (center, width, lo, hi)
    assert width <= 1.01 * (hi - lo), (width, hi - lo)
    shown = apply_voi_lut(values, ds)
    # pydicom's output range: the stored range (0 .. 2**BitsStored - 1) through the rescale
    black, white = apply_modality_lut(np.array([0, 2 ** int(ds.BitsStored) - 1]), ds)
    grey = (shown - black) / (white - black)  # 0 = black, 1 = white
    # the map fills the grey range linearly: its minimum black, its maximum white
    np.testing.assert_allclose(grey, (values - lo) / (hi - lo), atol=0.01)


def test_derived_xa_series_description_is_not_cut_mid_word(xa):
    _, derived, _ = xa
    ds = pydicom.dcmread(derived)
    full = f"Derived: {DESCRIPTION}"
    assert len(full) > 64  # the bundle's description does not fit SeriesDescription (LO, 64 characters)
    text = str(ds.SeriesDescription)
    assert 0 < len(text) <= 64 and full.startswith(text)
    assert full[len(text)] in " ,;:(", f"SeriesDescription {text!r} is cut inside a word of {full!r}"
    assert ds.DerivationDescription == DESCRIPTION  # the long text is kept whole


def test_derived_xa_of_a_source_without_technique_stays_valid(xa, tmp_path):
    """A source without tube current, exposure time and exposure: the derived map writes Exposure empty (unknown)."""
    from monai_saliency.data.dicom.xa_writer import write_xa_derived

    src, _, sal = xa
    bare = pydicom.dcmread(src)
    for kw in ("XRayTubeCurrent", "ExposureTime", "Exposure"):
        delattr(bare, kw)
    bare.save_as(tmp_path / "bare.dcm")
    derived = write_xa_derived(sal, tmp_path / "bare.dcm", tmp_path / "derived.dcm")
    ds = pydicom.dcmread(derived)
    assert "Exposure" in ds and ds.Exposure is None
    assert_valid(derived, "XAImage")


def test_pt_series_has_no_error(pet):
    series, _, _ = pet
    files = sorted(series.glob("*.dcm"))
    assert len(files) == 8
    errors = {f.name: dciodvfy_errors(f, "PETImage") for f in files}
    assert not any(errors.values()), "\n".join(f"{k}: {e}" for k, v in errors.items() for e in v)
    ds = pydicom.dcmread(files[0])
    assert "DECY" in ds.CorrectedImage and float(ds.DecayFactor) > 0  # Type 1C with decay correction


def test_parametric_map_has_no_error(pet):
    _, pm, _ = pet
    assert_valid(pm, "ParametricMap")


def test_parametric_map_window_references_and_uids(pet):
    series, pm, sal = pet
    ds = pydicom.dcmread(pm)
    voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    center, width = float(voi.WindowCenter), float(voi.WindowWidth)
    lo, hi = float(sal.min()), float(sal.max())
    assert width < 1 and voi.VOILUTFunction == "LINEAR_EXACT"  # LINEAR does not allow a width below 1
    assert center - width / 2 <= lo and center + width / 2 >= hi and width <= 1.01 * (hi - lo)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(series.glob("*.dcm"))]
    (series_ref,) = ds.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series_ref.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources
    }
    assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert ds.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID


@pytest.mark.parametrize("name", ["case_000.dcm", "case_001.dcm", "case_002.dcm", "case_003.dcm"])
def test_shipped_angiogram_samples_have_no_error(name):
    assert_valid(ANGIO / "sample_data" / name, "XAImage")


def test_shipped_pet_sample_series_has_no_error():
    files = sorted((PET_SAMPLE / "sub-01" / "scan-01").glob("*.dcm"))
    assert files
    errors = {f.name: dciodvfy_errors(f, "PETImage") for f in files}
    assert not any(errors.values()), "\n".join(f"{k}: {e}" for k, v in errors.items() for e in v)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("short", "short"),
        ("a" * 64, "a" * 64),
        ("word " * 20, "word " * 12 + "word"),
        (
            "Derived: Signature Activation (spatial DCT) of VideoLesionNet features.stage3, min-max to [0, 1]",
            "Derived: Signature Activation (spatial DCT) of VideoLesionNet",
        ),
        ("x" * 70, "x" * 64),  # one word longer than the limit: the only mid-word cut
    ],
)
def test_short_text_cuts_at_word_boundaries(text, expected):
    from monai_saliency.data.dicom.values import short_text

    assert short_text(text, 64) == expected


def test_covering_window_covers_after_decimal_string_rounding():
    from monai_saliency.data.dicom.values import covering_window

    rng = np.random.default_rng(0)
    for lo, span in zip(rng.normal(0, 1e3, 200) * 10.0 ** rng.integers(-9, 3, 200), 10.0 ** rng.uniform(-9, 4, 200)):
        hi = lo + span
        center, width = covering_window(float(lo), float(hi))
        assert len(str(center)) <= 16 and len(str(width)) <= 16
        center, width = float(str(center)), float(str(width))  # what a reader of the file gets
        assert center - width / 2 <= lo and center + width / 2 >= hi, (lo, hi)
        assert float(width) <= span * (1 + 1e-6) + 1e-9 * max(abs(lo), abs(hi))  # DS: ~11 significant digits
    assert [float(v) for v in covering_window(2.5, 2.5)] == [2.5, 1.0]
