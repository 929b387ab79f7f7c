"""Deprecated: split into :mod:`monai_saliency.data.dicom.xa` (reading) and :mod:`monai_saliency.data.dicom.xa_writer` (writing).

The old names keep working, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

from monai_saliency._deprecation import forward_module

__getattr__ = forward_module(
    __name__,
    ["monai_saliency.data.dicom.xa", "monai_saliency.data.dicom.xa_writer"],
    removed={
        "LoadXACine": "use monai_saliency.data.dicom.xa.read_xa_cine (or LoadImage(reader=PydicomReader(swap_ij=False)))",
        "LoadXACined": "use monai_saliency.data.dicom.xa.read_xa_cine (or LoadImaged(reader=PydicomReader(swap_ij=False)))",
        "register_xa_writer": "pass writer=XADerivedWriter to SaveImage (monai_saliency.data.dicom.xa_writer)",
    },
)
