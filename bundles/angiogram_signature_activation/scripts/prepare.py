"""Regenerate this bundle's sample cines deterministically (the shipped weights are left untouched).

Run from the repository root: ``python bundles/angiogram_signature_activation/scripts/prepare.py``. It writes
five 16-frame 64 x 64 synthetic angiogram cines (:func:`monai_saliency.data.synthetic.angiogram.make_angiogram_dataset`,
fixed seeds 500-502, outside the training seeds 0-2 and their fallbacks) to ``sample_data/``:

* ``case_000.dcm`` .. ``case_003.dcm``: multi-frame X-Ray Angiographic DICOM (12-bit, FrameTime 66.7 ms, different
  positioner angles, UIDs derived from the case name so they are the same on every run);
* ``case_004.nii.gz``: a NIfTI cine, array axes ``(T, H, W)`` (frames first, like MONAI reads XA), display
  intensities in [0, 1], a non-identity affine (0.3 mm pixels), marked as a cine (NIfTI ``intent_name``
  ``"cine"``);
* ``labels.json``: label ("has a moderate-or-severe lesion") and lesion grades of each case.

Re-running it gives identical pixels, UIDs, affine and labels; only the DICOM dates/times (the run's) differ.

``models/model.pt`` is *not* written here: it was trained with ``python scripts/train_video.py --out
models/model.pt`` (held-out AUC 0.978), and ``configs/train.json`` retrains it with a MONAI ``SupervisedTrainer``
into ``--output_dir``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.checks import mark_nifti_cine
from monai_saliency.data.dicom.xa_writer import write_xa_cine
from monai_saliency.data.nifti import save_nifti
from monai_saliency.data.synthetic.angiogram import make_angiogram_dataset

BUNDLE = Path(__file__).resolve().parents[1]
SAMPLE = BUNDLE / "sample_data"
# name, lesion grades, generator seed, file type, (primary, secondary) positioner angles
CASES = (
    ("case_000", (), 500, "dcm", (30.0, 20.0)),
    ("case_001", ("mild", "moderate"), 500, "dcm", (-30.0, 25.0)),
    ("case_002", ("mild",), 501, "dcm", (45.0, -20.0)),
    ("case_003", ("severe",), 502, "dcm", (0.0, 30.0)),
    ("case_004", ("moderate",), 502, "nii.gz", (0.0, 0.0)),
)
NIFTI_AFFINE = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.3, 0.0, -9.6], [0.0, 0.0, 0.3, -9.6], [0.0, 0.0, 0.0, 1.0]])


def main() -> dict[str, dict]:
    """Write the sample cines and labels; return the labels."""
    labels = {}
    for name, grades, seed, kind, (primary, secondary) in CASES:  # five sample files
        data = make_angiogram_dataset(1, shape=(64, 64), frames=16, seed=seed, grades=grades)
        cine = data.cine[0]
        if kind == "dcm":
            write_xa_cine(
                cine,
                SAMPLE / f"{name}.dcm",
                frame_time_ms=data.frame_time_ms,
                primary_angle=primary,
                secondary_angle=secondary,
                bits_stored=12,
                patient_id=f"SYNTH-{name}",
                uid_seed=f"angiogram-{name}",
            )
        else:
            mark_nifti_cine(save_nifti(cine[None], SAMPLE / f"{name}.nii.gz", affine=NIFTI_AFFINE))
        labels[name] = {"label": int(data.labels[0]), "grades": list(grades), "seed": seed, "file": f"{name}.{kind}"}
    with atomic_output(SAMPLE / "labels.json") as tmp:
        tmp.write_text(json.dumps(labels, indent=1) + "\n")
    print(f"wrote {len(CASES)} sample cines to {SAMPLE}")
    return labels


if __name__ == "__main__":
    main()
