"""Synthetic data generators and medical-image I/O helpers (NIfTI, DICOM, atomic writes)."""

from __future__ import annotations
