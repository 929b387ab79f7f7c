"""Lossless compression of the pixel data of the DICOM objects the package writes (derived XA maps, Secondary
Capture overlays).

``compression`` names one of :data:`COMPRESSIONS`:

* ``"jpegls"`` (the angiogram bundle's ``dicom_compression``): JPEG-LS Lossless (1.2.840.10008.1.2.4.80), encoded by
  CharLS (pyjpegls, a dependency of the package). Measured on this package's outputs (one thread): a 64 x 64 x 16
  study's 256-pixel-wide overlay in 23 ms at 13 % of its raw size, against 218 ms and 29 % in JPEG 2000 and 38 ms and
  43 % in RLE; noisy 12-bit 512 x 512 x 48 frames in 0.27 s at 46 %, against 1.6 s and 46 % in JPEG 2000. True colour
  is stored as RGB. pydicom, MONAI (through pydicom) and dcmtk (``dcmdjpls``, ``dcmj2pnm``) read it; dcm2niix reads it
  when built with JPEG-LS support (Debian's v1.0.20220720 is not: decompress first with ``dcmdjpls in.dcm out.dcm``).
* ``"jpeg2000"``: JPEG 2000 Lossless (1.2.840.10008.1.2.4.90), encoded by
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

import atexit
import contextlib
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.pixels import get_encoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless
from pydicom.valuerep import VR

__all__ = ["COMPRESSIONS", "check_compression", "encode_in_worker_process", "encode_pixel_data"]

logger = logging.getLogger(__name__)

_J2K_MIN_SIDE = 32
#: compression name -> transfer syntax (None: uncompressed)
COMPRESSIONS: dict[str, UID | None] = {
    "jpegls": JPEGLSLossless,
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
                f"no encoder for {syntax.name} is installed ({missing}); install pyjpegls / pylibjpeg-openjpeg / "
                "pylibjpeg-rle or pass compression='none'."
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
    if not getattr(_LOCAL, "in_worker_process", False):
        ds.compress(syntax, arr, generate_instance_uid=False)
        return
    opts = as_pixel_options(ds)
    encoded = _WORKER.encode(str(syntax), arr, opts)
    if encoded is None:  # the worker could not be used (reason logged): encode here
        ds.compress(syntax, arr, generate_instance_uid=False)
        return
    # what pydicom's Dataset.compress does with the encoded frames (pydicom.pixels.utils.compress), so that the bytes
    # are the same as those of an in-process encode
    total = (len(encoded) - 1) * 8 + sum(len(f) for f in encoded[:-1])
    if total > 2**32 - 1:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(encoded)
    else:
        ds.PixelData = encapsulate(encoded)
    elem = ds["PixelData"]
    elem.is_undefined_length = True
    elem.VR = VR.OB
    ds.file_meta.TransferSyntaxUID = syntax


_LOCAL = threading.local()
_CHUNK_BYTES = 8 << 20  # frames are sent to the worker in chunks of at most this many bytes (at least one frame)


def _encode_frames(syntax: str, frames: np.ndarray, opts: dict[str, Any]) -> list[bytes]:
    """In the worker: the encoded frames of ``frames`` (``opts``: pydicom's pixel options of the dataset, the frame
    count that of this chunk), by pydicom's encoder, as ``Dataset.compress`` runs it."""
    return list(get_encoder(UID(syntax)).iter_encode(frames, **opts))


def _send(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def _receive(stream: Any) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the encoder worker closed its pipe")
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the encoder worker closed its pipe")
    return pickle.loads(data)


def _serve() -> None:
    """The worker process's loop: read ``(syntax, frames, options)`` requests from stdin, answer ``(ok, encoded frames
    or error text)`` on stdout, until stdin closes (the parent ended or closed it)."""
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answer pipe
    while True:
        try:
            syntax, frames, opts = _receive(requests)
        except EOFError:
            return
        try:
            answer = (True, _encode_frames(syntax, frames, opts))
        except Exception as exc:  # noqa: BLE001  handed to the parent, which encodes in-process instead
            answer = (False, f"{type(exc).__name__}: {exc}")
        _send(answers, answer)


class _Worker:
    """One encoder process, started on first use by ``python -c`` (a fresh interpreter that imports only this
    module: unlike multiprocessing's spawn it never re-imports the caller's main script), with the caller's
    ``sys.path``; requests are serialised by a lock; the process ends when its stdin closes (at exit)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            code = "from monai_saliency.data.dicom.encoding import _serve; _serve()"
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
        return self.proc

    def encode(self, syntax: str, arr: np.ndarray, opts: dict[str, Any]) -> list[bytes] | None:
        """The encoded frames of ``arr`` (all its frames, ``opts["number_of_frames"]``), sent to the worker in chunks
        of at most ``_CHUNK_BYTES`` (so the worker holds a few frames at a time); None if the worker failed
        (logged)."""
        count = int(opts.get("number_of_frames", 1) or 1)
        frames = arr[None] if count == 1 else arr  # (frames, ...): a chunk of one frame is sent as that frame
        step = max(1, _CHUNK_BYTES // max(1, frames[0].nbytes))
        encoded: list[bytes] = []
        with self.lock:
            try:
                proc = self._start()
                for i in range(0, count, step):
                    chunk = frames[i : i + step]
                    _send(
                        proc.stdin,
                        (syntax, chunk[0] if len(chunk) == 1 else chunk, {**opts, "number_of_frames": len(chunk)}),
                    )
                    ok, result = _receive(proc.stdout)
                    if not ok:
                        logger.warning(
                            "the DICOM encoder process could not encode (%s); encoding in this process.", result
                        )
                        return None
                    encoded += result
            except (OSError, EOFError, pickle.PickleError) as exc:
                logger.warning("the DICOM encoder process failed (%s); encoding in this process.", exc)
                self.close()
                return None
        return encoded

    def close(self) -> None:
        """End the worker process (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                proc.stdout.close()


_WORKER = _Worker()
atexit.register(_WORKER.close)


@contextlib.contextmanager
def encode_in_worker_process() -> Iterator[None]:
    """Within this context, in the calling thread, :func:`encode_pixel_data` runs the JPEG-LS, JPEG 2000 and RLE encoders in
    one worker process (started on first use, shared by the whole process, ended at exit; if it cannot be used, the
    encoding runs here, with a warning) instead of in this thread.

    Why: openjpeg's encoder (pylibjpeg-openjpeg) holds Python's global interpreter lock while it encodes, about 9 ms
    a 256 x 278 RGB frame, and so does CharLS's (pyjpegls: a thread doing matrix products ran at 2 % of its speed
    while another encoded JPEG-LS), so a background writer thread that encodes stops every other thread of the
    process, e.g. the model's, however many cores are free (``benchmarks/speed/bench_cohort_throughput.py`` measures
    it). In a worker process the encoding runs beside them. The encoded bytes are the same; the frames are copied to
    the worker in chunks of at most 8 MiB (so it holds a few frames at a time) and the codestreams back (a few ms for
    a 64 x 64 study's overlay). The evaluator's background writer
    (:class:`monai_saliency.engines.evaluator.SaliencyEvaluator` with ``async_write``) uses it.
    """
    before = getattr(_LOCAL, "in_worker_process", False)
    _LOCAL.in_worker_process = True
    try:
        yield
    finally:
        _LOCAL.in_worker_process = before
