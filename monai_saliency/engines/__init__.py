"""MONAI inferers and ignite handlers that run explainers inside workflows."""

from __future__ import annotations
