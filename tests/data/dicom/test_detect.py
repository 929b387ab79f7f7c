from __future__ import annotations

import shutil
from pathlib import Path

from pydicom.data import get_testdata_file

from monai_saliency.data.dicom.detect import is_dicom_file


def test_dicom_recognised_by_content_not_name(tmp_path: Path) -> None:
    src = Path(get_testdata_file("CT_small.dcm"))
    odd = tmp_path / "IM000001"  # a PACS export name, no suffix
    shutil.copyfile(src, odd)
    assert is_dicom_file(src) and is_dicom_file(odd)
    fake = tmp_path / "notes.dcm"  # a .dcm name that is not DICOM
    fake.write_bytes(b"not a dicom file" * 20)
    assert not is_dicom_file(fake)
    short = tmp_path / "short.dcm"
    short.write_bytes(src.read_bytes()[:100])
    assert not is_dicom_file(short)
    assert not is_dicom_file(tmp_path)  # a folder
    assert not is_dicom_file(tmp_path / "missing")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    assert not is_dicom_file(tmp_path / "broken")
