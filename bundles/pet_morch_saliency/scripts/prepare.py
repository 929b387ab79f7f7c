"""Regenerate this bundle's sample study and shipped model deterministically.

Run from the repository root: ``python bundles/pet_morch_saliency/scripts/prepare.py``. It writes a synthetic
rest/task PET activation study (``monai_saliency.data.synthetic.pet_phantom.make_pet_study``: 8 subjects x 8 scans, a
"motor" region activated during the task, 20 x 24 x 16 voxels of 2 x 2 x 3.125 mm, seed 0) into
``sample_data/`` as one PT DICOM series per scan (``sub-XX/scan-YY/slice_*.dcm``) with ``targets.csv``
(scan, target = -1 rest / +1 task, subject) and the brain mask, ground-truth activation and anatomy as NIfTI;
then runs ``configs/train.json`` on it, which writes ``models/model.pt``. Voxel values are deterministic; the
DICOM UIDs are new on every run.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import torch

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.nifti import save_nifti
from monai_saliency.data.synthetic.pet_phantom import make_pet_study, save_pet_study_dicom

BUNDLE = Path(__file__).resolve().parents[1]
SHAPE = (20, 24, 16)


def write_sample(folder: Path, paradigm: str = "rest_task", seed: int = 0) -> Path:
    """Write the sample study into ``folder`` (replaced)."""
    study = make_pet_study(paradigm, shape=SHAPE, seed=seed)
    if folder.exists():
        shutil.rmtree(folder)
    series = save_pet_study_dicom(study, folder)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scan", "target", "subject"])
    for n, s in enumerate(series):
        w.writerow([s.relative_to(folder).as_posix(), f"{float(study.targets[n]):g}", int(study.subjects[n]) + 1])
    with atomic_output(folder / "targets.csv") as tmp:
        tmp.write_text(buf.getvalue())
    save_nifti(study.mask[None].to(torch.uint8), folder / "mask.nii.gz", affine=study.affine)
    save_nifti(study.truth[None].to(torch.uint8), folder / "truth.nii.gz", affine=study.affine)
    save_nifti(study.anatomy[None], folder / "anatomy.nii.gz", affine=study.affine)
    return folder


def main() -> None:
    from monai.bundle import run

    write_sample(BUNDLE / "sample_data")
    run(
        config_file=str(BUNDLE / "configs" / "train.json"),
        bundle_root=str(BUNDLE),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
    )
    size = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
    print(f"sample study and model written under {BUNDLE} (bundle size {size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
