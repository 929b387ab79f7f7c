"""Overlays and figures of saliency maps."""

from __future__ import annotations
