"""Faithfulness, localisation, sanity and statistics for saliency maps."""

from __future__ import annotations
