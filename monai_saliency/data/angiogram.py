"""Deprecated: moved to :mod:`monai_saliency.data.synthetic.angiogram`.

The old names keep working, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

from monai_saliency._deprecation import forward_module

__getattr__ = forward_module(__name__, ["monai_saliency.data.synthetic.angiogram"])
