"""Lossless compression of the pixel data of the DICOM objects the package writes (derived XA maps, Secondary
Capture overlays).

``compression`` names one of :data:`COMPRESSIONS`:

* ``"jpeg2000"`` (the angiogram bundle's ``dicom_compression``): JPEG 2000 Lossless (1.2.840.10008.1.2.4.90), encoded by
  pylibjpeg-openjpeg (a dependency of the package). True-colour pixels are stored with the reversible colour
  transform (``PhotometricInterpretation`` ``YBR_RCT``, as the standard requires for this transfer syntax); readers
  (pydicom, MONAI, dcm2niix, web viewers) return the RGB values bit for bit. dcmtk's free toolkit has no JPEG 2000
  decoder, and dcm2niix (v1.0.20220720) reads no multi-frame JPEG 2000 object (it asks for a decompressed copy):
  use ``compression="rle"`` or ``"none"`` for them. Frames smaller than 32 pixels on
  a side (below openjpeg's six resolution levels) are stored RLE Lossless instead.
* ``"rle"``: RLE Lossless (1.2.840.10008.1.2.5), which every DICOM toolkit decodes (dcmtk included); it compresses
  smooth maps well but noisy true-colour overlays hardly at all.
* ``"deflate"``: Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99): the whole dataset after the file meta
  information zlib-deflated (pydicom's writer, zlib's default level). Lossless and cheap: it exploits the pixel
  replication of a magnified overlay (a 64 x 64 x 16 cine's 256-pixel-wide capture: about 20 ms and 0.3 MB against
  145 ms and 0.7 MB in JPEG 2000) but compresses noisy full-size frames less (a 512 x 512 x 48 overlay: 0.5-1 s and
  25 MB against 3.2 s and 17 MB). pydicom, MONAI and dcmtk read it; dicom3tools' ``dciodvfy`` and dcm2niix
  (v1.0.20220720) do not (inflate first with dcmtk: ``dcmconv +te in.dcm out.dcm``), and many PACS do not accept
  it: an option for local use, not the default.
* ``"none"`` (the writers' default): uncompressed explicit-VR little endian (the largest, most widely readable).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_encoder
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

__all__ = ["COMPRESSIONS", "check_compression", "encode_pixel_data"]

_J2K_MIN_SIDE = 32
#: compression name -> transfer syntax (None: uncompressed)
COMPRESSIONS: dict[str, UID | None] = {
    "jpeg2000": JPEG2000Lossless,
    "rle": RLELossless,
    "deflate": DeflatedExplicitVRLittleEndian,
    "none": None,
}


def check_compression(compression: str) -> UID | None:
    """The transfer syntax of ``compression``, checked (see the module docstring).

    Raises:
        ValueError: an unknown name, or no installed encoder for it (the missing package is named).
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}.")
    syntax = COMPRESSIONS[compression]
    if syntax is not None and syntax != DeflatedExplicitVRLittleEndian:  # deflate is zlib, in the standard library
        encoder = get_encoder(syntax)
        if not encoder.is_available:
            missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in encoder.missing_dependencies)
            raise ValueError(
                f"no encoder for {syntax.name} is installed ({missing}); install pylibjpeg-openjpeg / pylibjpeg-rle "
                "or pass compression='none'."
            )
    return syntax


def encode_pixel_data(ds: Dataset, pixels: np.ndarray, compression: str = "none") -> None:
    """Set ``ds.PixelData`` from ``pixels`` (frames ``(T, H, W[, 3])`` or one frame ``(H, W[, 3])``), compressed.

    The Image Pixel attributes (rows, columns, samples, bits, photometric interpretation, frame count) must already
    describe ``pixels``; the transfer syntax (RLE Lossless for JPEG 2000 frames under 32 pixels a side) and, for true colour in JPEG 2000, ``PhotometricInterpretation``
    (``YBR_RCT``) are updated. ``LossyImageCompression`` is left as it is (every option is lossless).

    Args:
        ds: the dataset (with ``file_meta``).
        pixels: unsigned integer pixels matching the dataset's description.
        compression: a name of :data:`COMPRESSIONS` (``"deflate"``: the pixels are stored as they are and the
            transfer syntax set, the dataset is deflated when it is saved).

    Raises:
        ValueError: an unknown or unavailable compression.
    """
    syntax = check_compression(compression)
    arr = np.ascontiguousarray(pixels)
    if syntax is None or syntax == DeflatedExplicitVRLittleEndian:
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        if syntax is not None:  # pydicom deflates the dataset when it saves it in this transfer syntax
            ds.file_meta.TransferSyntaxUID = syntax
        return
    if syntax == JPEG2000Lossless and min(int(ds.Rows), int(ds.Columns)) < _J2K_MIN_SIDE:
        syntax = RLELossless  # openjpeg's six resolution levels need frames of at least 32 x 32
    if syntax == JPEG2000Lossless and int(ds.SamplesPerPixel) == 3:
        ds.PhotometricInterpretation = "YBR_RCT"  # pixels are given as RGB; the encoder applies the RCT
    ds.compress(syntax, arr, generate_instance_uid=False)
