"""DICOM reading and writing: XA cines and derived XA maps, PT series, Parametric Maps, Secondary Capture overlays.

Nothing is registered with MONAI at import: pass a writer to ``SaveImage(writer=...)``, or call
:func:`monai_saliency.data.dicom.parametric_map.register_parametric_map_writer` where a caller wants ``.dcm`` to
resolve to it.
"""

from __future__ import annotations
