"""Synthetic data with a known answer: angiogram cines, a PET activation phantom, blob images."""

from __future__ import annotations
