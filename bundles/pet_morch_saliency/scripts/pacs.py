"""PT series from a DICOMweb server (a PACS) for the ``pet_morch_saliency`` bundle, and its results back.

With ``--dicomweb_url URL`` the study folder is built from the server: :class:`PETDICOMweb` reads the local targets
file (``--targets_file``, required), whose ``scan`` column names each PT series by its SeriesInstanceUID, retrieves
exactly those series (of ``--study_uids``, or of every study with a PT series) into
``output_dir/.dicomweb/<SeriesInstanceUID>/`` and hands that folder to :func:`scripts.study.load_study` as
``dataset_dir``, with the targets file by its absolute path. A listed series that is not a PT series on the server
is refused by name before anything is retrieved. ``--store_results true`` stores the run's Parametric Maps and
Secondary Capture on the server (STOW-RS). All HTTP goes through
:class:`monai_saliency.data.dicom.dicomweb.DICOMwebSource` (credentials from environment variables only).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from monai_saliency.data.dicom.dicomweb import _UID, DICOMwebSource

from .study import StudyError, _read_targets

__all__ = ["PETDICOMweb"]


class PETDICOMweb(DICOMwebSource):
    """The PT series a targets file names, from a DICOMweb server (``url`` empty: the bundle reads its folder).

    Args:
        url: the DICOMweb root (``--dicomweb_url``); empty: nothing is fetched, ``targets_file`` passes unchanged.
        output_dir: the run's output folder (the series go to ``output_dir/.dicomweb``).
        study_uids: StudyInstanceUIDs to search; ``None``: every study with a PT series.
        targets_file: the local targets file (``scan,target`` rows, ``scan`` = SeriesInstanceUID); a relative path
            is relative to the working directory.

    Raises:
        StudyError: with a server, no targets file, an unreadable one, or a ``scan`` that is not a UID.
    """

    def __init__(
        self,
        url: str | None,
        output_dir: str | os.PathLike,
        study_uids: Sequence[str] | str | None = None,
        targets_file: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(url, output_dir, study_uids, modality="PT", series_folders=True)
        self.targets_file = None if targets_file is None else str(targets_file)
        if not self.url:
            return
        if not targets_file:
            raise StudyError(
                "--dicomweb_url needs --targets_file: a local CSV or JSON file with a row 'scan,target' per PT "
                "series, scan = the series' SeriesInstanceUID (see docs/README.md)."
            )
        path = Path(targets_file).resolve()  # relative to the working directory, not to the staging folder
        names = _read_targets(path.parent, str(path))[0]
        bad = [n for n in names if not _UID.fullmatch(n)]
        if bad:
            raise StudyError(
                f"{path}: with --dicomweb_url the scan column names each PT series by its SeriesInstanceUID "
                f"(digits and dots), got {bad[0]!r}."
            )
        self.targets_file = str(path)
        self.series_uids = names
        self.series_list = f"the targets file {path}"
