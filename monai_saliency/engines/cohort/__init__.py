"""Cohort runs: every study of a dataset folder processed into its own output folder, safely and resumably.

* :mod:`~monai_saliency.engines.cohort.layout`: :func:`discover_studies`, :func:`plan_layout` (study ids, output
  folders, the collision rule).
* :mod:`~monai_saliency.engines.cohort.lock`: :class:`RunLock` (one run per output folder, stale locks taken over).
* :mod:`~monai_saliency.engines.cohort.staging`: :class:`Staging` (hidden staging folders moved into place),
  :func:`safe_makedirs` (no symlink followed).
* :mod:`~monai_saliency.engines.cohort.manifest`: :class:`RecordStore` (per-study records), ``run_manifest.json``
  and ``predictions.csv`` helpers.
* :mod:`~monai_saliency.engines.cohort.report`: :func:`write_report` (the run's quick-look page ``report.html``).
* :mod:`~monai_saliency.engines.cohort.run`: :class:`CohortRun`, the object a bundle config holds.
"""

from __future__ import annotations

from monai_saliency.engines.cohort.layout import LayoutError, Study, discover_studies, plan_layout
from monai_saliency.engines.cohort.lock import LockError, RunLock
from monai_saliency.engines.cohort.manifest import RecordStore, atomic_write_text, is_complete, predictions_csv
from monai_saliency.engines.cohort.messages import install_once_filters, one_line
from monai_saliency.engines.cohort.report import report_html, write_report
from monai_saliency.engines.cohort.run import CohortRun
from monai_saliency.engines.cohort.staging import Staging, UnsafePathError, safe_makedirs

__all__ = [
    "CohortRun",
    "LayoutError",
    "LockError",
    "RecordStore",
    "RunLock",
    "Staging",
    "Study",
    "UnsafePathError",
    "atomic_write_text",
    "discover_studies",
    "install_once_filters",
    "is_complete",
    "one_line",
    "plan_layout",
    "predictions_csv",
    "report_html",
    "safe_makedirs",
    "write_report",
]
