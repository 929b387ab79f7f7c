"""Old data module paths forward to the new modules for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib

import pytest

MOVED = [
    ("io", "atomic_output", "monai_saliency.data.atomic"),
    ("io", "save_nifti", "monai_saliency.data.nifti"),
    ("io", "AtomicNibabelWriter", "monai_saliency.data.nifti"),
    ("angiogram", "make_angiogram_dataset", "monai_saliency.data.synthetic.angiogram"),
    ("blobs", "make_blob_dataset", "monai_saliency.data.synthetic.blobs"),
    ("pet_study", "make_pet_study", "monai_saliency.data.synthetic.pet_phantom"),
    ("pet_study", "PETStudy", "monai_saliency.data.synthetic.pet_phantom"),
    ("pet_study", "read_pet_series", "monai_saliency.data.dicom.pet_series"),
    ("pet_study", "write_parametric_map", "monai_saliency.data.dicom.parametric_map"),
    ("pet_writer", "ParametricMapWriter", "monai_saliency.data.dicom.parametric_map"),
    ("pet_writer", "register_parametric_map_writer", "monai_saliency.data.dicom.parametric_map"),
    ("dicom_xa", "read_xa_cine", "monai_saliency.data.dicom.xa"),
    ("dicom_xa", "XACineError", "monai_saliency.data.dicom.xa"),
    ("dicom_xa", "write_xa_derived", "monai_saliency.data.dicom.xa_writer"),
    ("dicom_xa", "XADerivedWriter", "monai_saliency.data.dicom.xa_writer"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_old_path_warns_and_forwards(old, name, new):
    module = importlib.import_module(f"monai_saliency.data.{old}")
    with pytest.warns(DeprecationWarning, match=f"use {new}.{name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_old_from_import_still_works():
    with pytest.warns(DeprecationWarning):
        from monai_saliency.data.pet_study import make_pet_study  # noqa: F401


@pytest.mark.parametrize("name", ["LoadXACine", "LoadXACined", "register_xa_writer"])
def test_removed_dead_code_says_what_to_use(name):
    import monai_saliency.data.dicom_xa as old

    with pytest.raises(AttributeError, match="was removed: .*(read_xa_cine|writer=XADerivedWriter)"):
        getattr(old, name)


def test_unknown_name_is_an_attribute_error():
    import monai_saliency.data.io as old

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        old.nope  # noqa: B018
