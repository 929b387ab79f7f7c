"""Deprecated: split into :mod:`monai_saliency.data.atomic` (``atomic_output``, ``source_paths``) and :mod:`monai_saliency.data.nifti`
(``save_nifti``, ``AtomicNibabelWriter``).

The old names keep working, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

from monai_saliency._deprecation import forward_module

__getattr__ = forward_module(__name__, ["monai_saliency.data.atomic", "monai_saliency.data.nifti"])
