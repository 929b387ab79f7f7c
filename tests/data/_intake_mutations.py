"""Seeded mutations of DICOM and NIfTI files for the intake fuzz tests (byte flips, truncations, header fields set
to extreme or inconsistent values), written without any validation by pydicom or nibabel."""

from __future__ import annotations

import copy
import gzip
import io
import math
import random
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

REPO = Path(__file__).resolve().parents[2]
CINE_SAMPLES = REPO / "bundles" / "angiogram_signature_activation" / "sample_data"
VOLUME_SAMPLES = REPO / "bundles" / "gradient_saliency_3d" / "sample_data"
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
NIBABEL_FILES = ("anatomical.nii", "functional.nii", "example_nifti2.nii.gz", "standard.nii.gz")
HUGE = 2**31 - 1

Mutant = tuple[str, bytes]  # (description, file bytes)


def dicom_sources() -> list[Path]:
    return sorted(CINE_SAMPLES.glob("*.dcm"))[:2]


def nifti_sources() -> list[Path]:
    return [
        CINE_SAMPLES / "case_004.nii.gz",
        VOLUME_SAMPLES / "case_000.nii.gz",
        *(NIBABEL_DATA / name for name in NIBABEL_FILES),
    ]


def raw_nifti(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


# --------------------------------------------------------------------------------------------------------- bytes


def flip_bytes(rng: random.Random, data: bytes, head: int = 2048) -> Mutant:
    """1-8 random bytes replaced, four in five of them in the first ``head`` bytes (where the header is)."""
    buf = bytearray(data)
    where = []
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(min(head, len(buf))) if rng.random() < 0.8 else rng.randrange(len(buf))
        buf[i] = rng.randrange(256)
        where.append(i)
    return f"bytes {where} replaced", bytes(buf)


def truncate(rng: random.Random, data: bytes) -> Mutant:
    n = rng.choice([0, 1, 4, 128, 132, 347, 348, 352, rng.randrange(len(data))])
    return f"truncated to {n} bytes", data[:n]


# --------------------------------------------------------------------------------------------------------- DICOM

_DICOM_FIELDS: list[tuple[str, list]] = [
    ("NumberOfFrames", [0, -1, 1, 2, 15, 17, HUGE, 10**12, "abc", "", "1.5"]),
    ("Rows", [0, 1, 63, 65, 65535, 4]),
    ("Columns", [0, 1, 63, 65, 65535, 4]),
    ("BitsAllocated", [0, 1, 7, 8, 12, 24, 32, 64]),
    ("BitsStored", [0, 1, 16, 17, 32]),
    ("HighBit", [0, 15, 31]),
    ("SamplesPerPixel", [0, 3, 4]),
    ("PixelRepresentation", [1, 2]),
    ("PhotometricInterpretation", ["RGB", "PALETTE COLOR", "YBR_FULL", "MONOCHROME1", "XYZ"]),
    ("Modality", ["CT", "MR", "PT", "", "US", "xa"]),
    ("SOPClassUID", [str(CTImageStorage), "1.2.3", ""]),
    ("FrameTime", [0, -5, "nan", "inf", "x", ""]),
    ("CineRate", [0, -1, "x"]),
    ("FrameTimeVector", [[66.7] * 3, [66.7] * 16, [], ["x"] * 16, 66.7]),
    ("RescaleSlope", [1, 0, "nan"]),
    ("PlanarConfiguration", [1]),
]
_TRANSFER_SYNTAXES = [
    JPEGBaseline8Bit,
    JPEG2000Lossless,
    RLELossless,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    "1.2.3.4",
]


def _dicom_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    with pydicom.config.disable_value_validation():
        pydicom.dcmwrite(out, ds, enforce_file_format=False)
    return out.getvalue()


def _set(ds: Dataset, keyword: str, value) -> None:
    with pydicom.config.disable_value_validation():
        if keyword in ds:
            ds[keyword].value = value
        else:
            setattr(ds, keyword, value)


def _mutate_dicom_once(rng: random.Random, original: Dataset) -> Mutant:
    ds = copy.deepcopy(original)
    done = []
    for keyword, values in rng.sample(_DICOM_FIELDS, rng.randint(1, 3)):
        if rng.random() < 0.15 and keyword in ds:
            del ds[keyword]
            done.append(f"{keyword} deleted")
        else:
            value = rng.choice(values)
            _set(ds, keyword, value)
            done.append(f"{keyword}={value!r}")
    roll = rng.random()
    if roll < 0.15:
        uid = pydicom.uid.UID(rng.choice(_TRANSFER_SYNTAXES))
        ds.file_meta.TransferSyntaxUID = uid
        if uid.is_compressed:  # raw frames (or pieces of them) where compressed ones belong
            frames = max(1, rng.choice([1, 2, 16]))
            step = max(1, len(ds.PixelData) // frames)
            ds.PixelData = encapsulate([ds.PixelData[i : i + step] for i in range(0, len(ds.PixelData), step)])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        done.append(f"TransferSyntaxUID={uid}")
    elif roll < 0.3:
        n = rng.choice([0, 1, 2, 1000, len(ds.PixelData) // 2, len(ds.PixelData) - 2, len(ds.PixelData) + 2])
        ds.PixelData = (ds.PixelData * 2)[:n]
        done.append(f"PixelData {n} bytes")
    elif roll < 0.35:
        del ds.PixelData
        done.append("PixelData deleted")
    return "; ".join(done), _dicom_bytes(ds)


def mutate_dicom_fields(rng: random.Random, ds: Dataset) -> Mutant:
    """1-3 header fields set to extreme or inconsistent values, or deleted; sometimes the transfer syntax or the
    pixel data changed under them."""
    for _ in range(20):
        try:
            return _mutate_dicom_once(rng, ds)
        except Exception:  # noqa: BLE001,S112  a value pydicom cannot even write (e.g. -1 in a US field): draw again
            continue
    return flip_bytes(rng, _dicom_bytes(ds), head=1400)


def dicom_mutant(rng: random.Random, source: Path, ds: Dataset) -> Mutant:
    data = source.read_bytes()
    kind = rng.random()
    if kind < 0.35:
        return flip_bytes(rng, data, head=1400)
    if kind < 0.5:
        return truncate(rng, data)
    return mutate_dicom_fields(rng, ds)


# --------------------------------------------------------------------------------------------------------- NIfTI

_NIFTI_DATATYPES = [0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 9999, -4]


def _nifti_values(rng: random.Random, field: str) -> object:
    bad_float = rng.choice([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e30, -1e30, 1e-30])
    return {
        "dim0": rng.choice([-1, 0, 1, 2, 3, 4, 5, 7, 8, 100]),
        "dim": rng.choice([-32768, -5, -1, 0, 1, 2, 32767]),
        "pixdim": bad_float,
        "datatype": rng.choice(_NIFTI_DATATYPES),
        "bitpix": rng.choice([0, 1, 7, 8, 16, 64, 255]),
        "vox_offset": rng.choice([-352.0, 0.0, 100.0, 351.0, 1e9, math.nan, math.inf, 2.0**40]),
        "scl_slope": bad_float,
        "scl_inter": bad_float,
        "qform_code": rng.choice([0, 1, 4, -1, 255, 30000]),
        "sform_code": rng.choice([0, 1, 4, -1, 255, 30000]),
        "quatern_b": bad_float,
        "srow_x": bad_float,
        "sizeof_hdr": rng.choice([0, 1, 347, 349, 540, 348, -348, HUGE]),
        "magic": rng.choice([b"ni1", b"n+2", b"xxx", b"", b"n+1"]),
        "xyzt_units": rng.choice([0, 255, 10, 24]),
        "intent_code": rng.choice([0, 2001, 1007, 9999, -1]),
        "intent_name": rng.choice([b"cine", b"CINE", b"\xff\xfe"]),
        "extension": rng.choice([b"\x01\x00\x00\x00", b"\x01\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00"]),
    }[field]


def set_nifti_field(data: bytes, field: str, value, index: int | None = None) -> bytes:
    """``data`` (a raw little-endian NIfTI-1 stream) with one header field (or one entry of it) set, unvalidated."""
    hdr = np.frombuffer(bytearray(data[:348]), dtype=nib.nifti1.header_dtype).copy()
    if index is None:
        hdr[field] = value
    else:
        hdr[field][0][index] = value
    return hdr.tobytes() + data[348:]


def mutate_nifti_fields(rng: random.Random, data: bytes) -> Mutant:
    """1-3 header fields of a raw NIfTI-1/2 stream set to extreme or inconsistent values (little endian headers)."""
    two = data[:4] == np.int32(540).tobytes()
    dtype = nib.nifti2.header_dtype if two else nib.nifti1.header_dtype
    size = dtype.itemsize
    if len(data) < size or data[:4] not in (np.int32(348).tobytes(), np.int32(540).tobytes()):
        return flip_bytes(rng, data, head=352)  # a big-endian header: flip bytes instead
    hdr = np.frombuffer(bytearray(data[:size]), dtype=dtype).copy()
    rest = data[size:]
    done = []
    fields = [
        "dim0",
        "dim",
        "pixdim",
        "datatype",
        "bitpix",
        "vox_offset",
        "scl_slope",
        "scl_inter",
        "qform_code",
        "sform_code",
        "quatern_b",
        "srow_x",
        "sizeof_hdr",
        "magic",
        "xyzt_units",
        "intent_code",
        "intent_name",
        "extension",
    ]
    for field in rng.sample(fields, rng.randint(1, 3)):
        value = _nifti_values(rng, field)
        with np.errstate(all="ignore"):
            if field == "dim0":
                hdr["dim"][0][0] = value
            elif field in ("dim", "pixdim"):
                i = rng.randrange(1, 8)
                hdr[field][0][i] = value
                field = f"{field}[{i}]"
            elif field == "srow_x":
                hdr[field][0][rng.randrange(4)] = value
            elif field == "extension":
                rest = value + rest[len(value) :] if len(rest) >= len(value) else value
            elif field in hdr.dtype.names:
                hdr[field] = np.array(value).astype(hdr.dtype[field], copy=False) if field != "magic" else value
        done.append(f"{field}={value!r}")
    return "; ".join(done), hdr.tobytes() + rest


def nonfinite_nifti(rng: random.Random, source: Path) -> Mutant:
    img = nib.load(str(source))
    values = np.asarray(img.dataobj, dtype=np.float32).copy()
    flat = values.reshape(-1)
    bad = rng.choice([math.nan, math.inf, -math.inf])
    flat[rng.sample(range(flat.size), rng.randint(1, 5))] = bad
    out = type(img)(values, img.affine, img.header)
    out.header.set_data_dtype(np.float32)
    return f"{bad} values", out.to_bytes()


def nifti_mutant(rng: random.Random, source: Path) -> Mutant:
    data = raw_nifti(source)
    kind = rng.random()
    if kind < 0.3:
        return flip_bytes(rng, data, head=352)
    if kind < 0.45:
        return truncate(rng, data)
    if kind < 0.5:
        return nonfinite_nifti(rng, source)
    return mutate_nifti_fields(rng, data)


def mutants(seed: int, n: int) -> list[tuple[str, str, Callable[[], Mutant]]]:
    """``n`` seeded mutants as ``(name, suffix, make)``: about one DICOM for every two NIfTI files; ``make()``
    returns ``(description, bytes)`` (lazily, so that a test writes one at a time)."""
    rng = random.Random(seed)
    dicoms = [(p, pydicom.dcmread(p)) for p in dicom_sources()]
    niftis = nifti_sources()
    out = []
    for i in range(n):
        sub = random.Random(rng.getrandbits(64))
        if i % 3 == 0:
            path, ds = dicoms[i % len(dicoms)]
            out.append((f"m{i:04d}_{path.stem}", ".dcm", lambda s=sub, p=path, d=ds: dicom_mutant(s, p, d)))
        else:
            path = niftis[i % len(niftis)]
            suffix = ".nii.gz" if sub.random() < 0.25 else ".nii"
            stem = path.name.split(".")[0]
            make = (lambda s=sub, p=path: nifti_mutant(s, p)) if suffix == ".nii" else _gz(sub, path)
            out.append((f"m{i:04d}_{stem}", suffix, make))
    return out


def _gz(rng: random.Random, path: Path) -> Callable[[], Mutant]:
    def make() -> Mutant:
        what, data = nifti_mutant(rng, path)
        if rng.random() < 0.2:  # a damaged gzip stream
            packed = bytearray(gzip.compress(data, compresslevel=1))
            cut = rng.randrange(len(packed))
            return f"{what}; gzip truncated to {cut}", bytes(packed[:cut])
        return what, gzip.compress(data, compresslevel=1)

    return make
