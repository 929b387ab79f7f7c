"""Interpreting DICOM pixel data on reading: decoders, photometric interpretation, signedness, bits, Modality LUT.

One path for every reader of the project (XA cines, PT series), built on pydicom's own pixel handling:

1. :func:`check_pixel_format` refuses by name what cannot be read as monochrome values: colour (``RGB``,
   ``YBR_*``), ``PALETTE COLOR``, a photometric interpretation the caller does not accept, a transfer syntax for
   which pydicom has no decoder or none installed (naming the syntax and the packages that would decode it), and
   encapsulated pixel data whose fragments or offset table cannot hold the declared ``NumberOfFrames``.
2. :func:`modality_values` decodes with ``Dataset.pixel_array`` (pydicom masks bits above ``HighBit`` and
   sign-extends signed data of ``BitsStored < BitsAllocated``), applies the Modality LUT
   (``pydicom.pixels.apply_modality_lut``: ``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence) and,
   for ``MONOCHROME1``, inverts the values within their representable range so that larger always means brighter.

What the values then mean: modality units (after the Modality LUT) in ``MONOCHROME2`` orientation, inside the range
:func:`modality_range` gives (the stored bit depth's range through the Modality LUT). A VOI LUT or window
(``WindowCenter``/``WindowWidth``, VOI LUT Sequence) present in the file is *not* applied: it is a viewer's
presentation choice that differs between vendors and sites and clips values, while a network must see the same
intensities for the same pixels. Presentation LUT Shape and Pixel Padding Value are not applied either.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from io import BytesIO

import numpy as np
from pydicom.dataset import Dataset

__all__ = ["MONOCHROME", "check_pixel_format", "modality_range", "modality_values"]

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT", "HSV")
# errors pydicom and its plugins raise on pixel data they cannot decode (truncated streams, bad headers)
_DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    NotImplementedError,
    OSError,
    IndexError,
    KeyError,
    StopIteration,
    struct.error,
)


def _transfer_syntax(ds: Dataset):
    return getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)


def check_pixel_format(
    ds: Dataset,
    name: str,
    error: type[Exception] = ValueError,
    accept: Collection[str] = MONOCHROME,
) -> None:
    """Refuse, by name, pixel data that cannot be read as monochrome values here.

    Args:
        ds: the dataset (pixel data not yet decoded).
        name: what to call it in messages (e.g. the file path).
        error: the exception class raised.
        accept: the photometric interpretations accepted (a subset of :data:`MONOCHROME`).

    Raises:
        error: for colour or palette colour data, an unaccepted or missing photometric interpretation, more than
            one sample per pixel, a transfer syntax pydicom cannot decode (or has no installed decoder for), or
            encapsulated pixel data whose fragment count or offset table contradicts ``NumberOfFrames``.
    """
    pi = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if pi in _COLOUR or (spp != 1 and pi != "PALETTE COLOR"):
        raise error(
            f"{name} is colour (PhotometricInterpretation={pi or 'missing'}, SamplesPerPixel={spp}); only monochrome "
            f"images ({', '.join(accept)}) are supported: convert it to greyscale first."
        )
    if pi == "PALETTE COLOR":
        raise error(
            f"{name} is palette colour (PhotometricInterpretation=PALETTE COLOR): its stored values are indices into "
            f"a colour table, not intensities; only {', '.join(accept)} is supported."
        )
    if pi not in accept:
        raise error(
            f"{name} has PhotometricInterpretation={pi or 'missing'}; only {', '.join(accept)} is supported here."
        )
    tsyntax = _transfer_syntax(ds)
    if tsyntax is not None and not tsyntax.is_transfer_syntax:
        raise error(
            f"{name} declares TransferSyntaxUID {tsyntax}, which is not a transfer syntax pydicom knows (a private or "
            "unknown encoding); its pixel data cannot be decoded here."
        )
    if tsyntax is None or not tsyntax.is_compressed:
        return
    from pydicom.pixels import get_decoder

    label = f"transfer syntax {tsyntax.name} ({tsyntax})"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as e:
        raise error(
            f"{name} uses {label}, for which pydicom has no pixel data decoder; convert it to an uncompressed "
            "transfer syntax with a tool that decodes it."
        ) from e
    if not decoder.is_available:
        raise error(
            f"{name} uses {label}, but no decoder for it is installed; install one of: "
            f"{'; '.join(decoder.missing_dependencies)}."
        )
    _check_fragments(ds, name, error)


def _check_fragments(ds: Dataset, name: str, error: type[Exception]) -> None:
    """Encapsulated pixel data: every frame needs >= 1 fragment, and an offset table needs one entry per frame."""
    from pydicom.encaps import parse_basic_offsets, parse_fragments

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    buffer = BytesIO(ds.PixelData)
    try:
        offsets = parse_basic_offsets(buffer)  # leaves the buffer at the first fragment
        fragments, _ = parse_fragments(buffer)
    except _DECODE_ERRORS as e:
        raise error(f"{name}: the encapsulated (compressed) pixel data is truncated or corrupt: {e}") from e
    if "ExtendedOffsetTable" in ds and ds.ExtendedOffsetTable:
        offsets = list(range(len(ds.ExtendedOffsetTable) // 8))
    if offsets and len(offsets) != frames:
        raise error(
            f"inconsistent frame count in {name}: NumberOfFrames={frames} but the compressed pixel data's offset "
            f"table lists {len(offsets)} frames."
        )
    if fragments < frames:
        raise error(
            f"{name}: compressed pixel data is truncated or NumberOfFrames is wrong: {fragments} fragments for "
            f"NumberOfFrames={frames} (each frame needs at least one); the file is incomplete or corrupt."
        )


def modality_range(ds: Dataset) -> tuple[float, float]:
    """The range the Modality LUT's output can take: the stored bit depth's range through the Modality LUT.

    Unsigned ``[0, 2**BitsStored - 1]`` or signed ``[-2**(BitsStored-1), 2**(BitsStored-1) - 1]`` stored values,
    through ``RescaleSlope``/``RescaleIntercept``; with a Modality LUT Sequence, ``[0, 2**bits - 1]`` with the LUT's
    bits per entry (its descriptor's third value).

    Args:
        ds: the dataset.

    Returns:
        ``(lo, hi)`` with ``lo < hi``.
    """
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float((1 << bits) - 1)
    stored = int(ds.get("BitsStored", ds.BitsAllocated) or ds.BitsAllocated)
    if int(ds.get("PixelRepresentation", 0) or 0):
        lo, hi = -float(1 << (stored - 1)), float((1 << (stored - 1)) - 1)
    else:
        lo, hi = 0.0, float((1 << stored) - 1)
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:  # as pydicom's apply_modality_lut
        return lo, hi
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    a, b = slope * lo + intercept, slope * hi + intercept
    return min(a, b), max(a, b)


def modality_values(ds: Dataset, name: str, error: type[Exception] = ValueError) -> np.ndarray:
    """Decode the pixel data and return modality values in ``MONOCHROME2`` orientation (larger is brighter).

    Call :func:`check_pixel_format` first. ``MONOCHROME1`` values ``v`` become ``lo + hi - v`` with
    ``(lo, hi) = modality_range(ds)``, so a ``MONOCHROME1`` image and its ``MONOCHROME2`` twin (stored values
    ``2**BitsStored - 1 - s``) give the same array.

    Args:
        ds: the dataset.
        name: what to call it in messages.
        error: the exception class raised.

    Returns:
        float32 array, pydicom's shape (``(frames, rows, cols)`` for multi-frame data, ``(rows, cols)`` otherwise).

    Raises:
        error: if the pixel data cannot be decoded.
    """
    from pydicom.pixels import apply_modality_lut

    tsyntax = _transfer_syntax(ds)
    try:
        stored = ds.pixel_array  # masks bits above HighBit, sign-extends signed data
    except _DECODE_ERRORS as e:
        syntax = f"{tsyntax.name} ({tsyntax})" if tsyntax is not None else "unknown transfer syntax"
        raise error(f"{name}: the pixel data ({syntax}) cannot be decoded: {e}") from e
    if ds.get("ModalityLUTSequence"):
        # pydicom indexes the LUT with ``stored - first mapped value`` in the stored dtype, which overflows for a
        # signed 16-bit image whose LUT starts at -32768: index in int32
        stored = stored.astype(np.int32)
    try:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
        lo, hi = modality_range(ds)
    except (*_DECODE_ERRORS, TypeError, AttributeError) as e:
        raise error(f"{name}: the Modality LUT / RescaleSlope+RescaleIntercept cannot be applied: {e}") from e
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise error(f"{name}: the Modality LUT / rescale maps the stored range to [{lo}, {hi}], which is empty.")
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        values = np.float32(lo + hi) - values
    return values
