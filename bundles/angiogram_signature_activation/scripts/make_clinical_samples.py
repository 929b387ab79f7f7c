"""Generate the two clinical-size sample cines into ``sample_data_clinical/`` and check them against their SHA-256.

From the repository root (or the bundle root, with ``scripts/make_clinical_samples.py``)::

    python bundles/angiogram_signature_activation/scripts/make_clinical_samples.py

writes, deterministically (:func:`monai_saliency.data.synthetic.angiogram_clinical.make_clinical_angiogram_dataset`,
fixed seeds, fixed UIDs and dates), two 12-bit multi-frame XA DICOM cines (uncompressed; together ~90 MB, too
large to ship, so ``sample_data_clinical/`` is git-ignored and regenerated) with the package's writer
(:func:`monai_saliency.data.dicom.xa_writer.write_xa_cine`, as ``scripts/prepare.py`` writes ``sample_data/``):

* ``clinical_512.dcm``: 512 x 512, 48 frames at 15 frames/s (3.2 s), a severe lesion (label 1);
* ``clinical_1024.dcm``: 1024 x 1024, 30 frames at 15 frames/s (2 s), a mild lesion only (label 0);
* ``labels.json``: labels and grades.

Their SHA-256 are recorded in ``docs/clinical_samples.json`` (committed) and checked after writing and by
:func:`clinical_samples`, the function other code calls to get the files (generated on first use)::

    from monai_saliency._deprecation import bundle_scripts
    paths = bundle_scripts("angiogram_signature_activation", "make_clinical_samples").clinical_samples()

Run the bundle on them with ``configs/inference_clinical.json`` merged after ``configs/inference.json``
(``--dataset_dir`` defaults to ``sample_data_clinical``). ``--update-record`` rewrites the record after an
intended change of the generator or the writer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.dicom.xa_writer import write_xa_cine
from monai_saliency.data.synthetic.angiogram_clinical import make_clinical_angiogram_dataset

__all__ = ["CASES", "FIXED_DATE", "RECORD", "SAMPLE_DIR", "clinical_samples", "main", "sha256_of", "write_case"]

BUNDLE = Path(__file__).resolve().parents[1]
SAMPLE_DIR = BUNDLE / "sample_data_clinical"
RECORD = BUNDLE / "docs" / "clinical_samples.json"
FIELD_OF_VIEW_MM = 150.0
FIXED_DATE, FIXED_TIME = "20260101", "120000"  # fixed study/series/content dates: identical bytes on every run
# name: (shape, frames, lesion grades, generator seed, (primary, secondary) positioner angles)
CASES: dict[str, tuple[tuple[int, int], int, tuple[str, ...], int, tuple[float, float]]] = {
    "clinical_512": ((512, 512), 48, ("severe",), 910, (-30.0, 25.0)),
    "clinical_1024": ((1024, 1024), 30, ("mild",), 911, (40.0, -20.0)),
}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):  # 1 MiB blocks
            h.update(block)
    return h.hexdigest()


def write_case(name: str, folder: str | os.PathLike, case: tuple | None = None) -> dict[str, Any]:
    """Generate case ``name`` of :data:`CASES` (or ``case``, same layout) as ``<folder>/<name>.dcm``.

    Returns:
        ``{"file", "label", "grades", "seed", "shape", "frames", "bits"}``.
    """
    shape, frames, grades, seed, (primary, secondary) = CASES[name] if case is None else case
    batch = make_clinical_angiogram_dataset(1, shape=shape, frames=frames, seed=seed, grades=grades)
    path = Path(folder) / f"{name}.dcm"
    write_xa_cine(
        batch.cine[0].numpy(),
        path,
        frame_time_ms=batch.frame_time_ms,
        primary_angle=primary,
        secondary_angle=secondary,
        pixel_spacing_mm=FIELD_OF_VIEW_MM / shape[0],
        bits_stored=batch.bits,
        patient_id=f"SYNTH-{name}",
        uid_seed=f"angiogram-{name}",
    )
    ds = pydicom.dcmread(path)  # the writer stamps today's date: fix it so that the bytes are reproducible
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = FIXED_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = FIXED_TIME
    with atomic_output(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return {
        "file": path.name,
        "label": int(batch.labels[0]),
        "grades": list(grades),
        "seed": seed,
        "shape": list(shape),
        "frames": frames,
        "bits": batch.bits,
    }


def _record() -> dict[str, Any]:
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


def clinical_samples(
    folder: str | os.PathLike | None = None, generate: bool = True, verify: bool = True
) -> dict[str, Path]:
    """Paths of the two clinical-size sample cines, generating missing ones; checked against the recorded SHA-256.

    Args:
        folder: where the files live (default the bundle's ``sample_data_clinical/``).
        generate: write missing files (a few seconds; else a missing file is an error).
        verify: compare every file's SHA-256 with ``docs/clinical_samples.json``.

    Returns:
        ``{"clinical_512": path, "clinical_1024": path}``.

    Raises:
        FileNotFoundError: a file is missing and ``generate`` is False.
        RuntimeError: a file's SHA-256 differs from the record (the message names both and the fix).
    """
    folder = Path(folder) if folder is not None else SAMPLE_DIR
    record = _record().get("files", {})
    paths = {}
    for name in CASES:  # the two sample cines
        path = folder / f"{name}.dcm"
        if not path.is_file():
            if not generate:
                raise FileNotFoundError(f"{path} is missing; run scripts/make_clinical_samples.py.")
            folder.mkdir(parents=True, exist_ok=True)
            write_case(name, folder)
        if verify:
            want = record.get(f"{name}.dcm", {}).get("sha256")
            got = sha256_of(path)
            if want != got:
                raise RuntimeError(
                    f"{path}: SHA-256 {got} differs from {want} recorded in {RECORD}; delete the file to regenerate "
                    "it, or run scripts/make_clinical_samples.py --update-record after an intended change."
                )
        paths[name] = path
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Write both cines and ``labels.json`` into ``--out`` and check (or, with ``--update-record``, rewrite) the
    SHA-256 record; returns the record."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=str, default=str(SAMPLE_DIR), help="output folder")
    p.add_argument("--update-record", action="store_true", help="rewrite docs/clinical_samples.json")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = {name: write_case(name, out) for name in CASES}
    with atomic_output(out / "labels.json") as tmp:
        tmp.write_text(json.dumps(labels, indent=1) + "\n")
    files = {
        v["file"]: {"sha256": sha256_of(out / v["file"]), "bytes": (out / v["file"]).stat().st_size, **v}
        for v in labels.values()
    }
    record = {"generator": "monai_saliency.data.synthetic.angiogram_clinical", "files": files}
    if a.update_record:
        with atomic_output(RECORD) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
    else:
        clinical_samples(out, generate=False, verify=True)
    print(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
