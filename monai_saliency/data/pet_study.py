"""Deprecated: split into :mod:`monai_saliency.data.synthetic.pet_phantom` (the synthetic study), :mod:`monai_saliency.data.dicom.pet_series`
(PT series) and :mod:`monai_saliency.data.dicom.parametric_map` (Parametric Maps).

The old names keep working, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

from monai_saliency._deprecation import forward_module

__getattr__ = forward_module(
    __name__,
    [
        "monai_saliency.data.synthetic.pet_phantom",
        "monai_saliency.data.dicom.pet_series",
        "monai_saliency.data.dicom.parametric_map",
    ],
)
