"""DICOM value helpers shared by the writers: texts that fit a VR without a cut mid-word, and display windows."""

from __future__ import annotations

from pydicom.valuerep import DSfloat, format_number_as_ds

__all__ = ["covering_window", "short_text"]


def short_text(text: str, limit: int = 64) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary (a DICOM LO/SH value that is not cut mid-word).

    Runs of whitespace become one space; trailing separators (``,;:-(`` and spaces) left by the cut are removed; a
    single word longer than ``limit`` is the only case that is cut inside a word.

    Args:
        text: the text (e.g. a SeriesDescription).
        limit: maximum length (64 for LO, 16 for SH).

    Returns:
        ``text`` itself when it fits, else its longest word-boundary prefix that fits.
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    cut = head.rfind(" ")
    head = head[:cut] if cut > 0 else text[:limit]
    return head.rstrip(" ,;:-([{")


def covering_window(lo: float, hi: float) -> tuple[DSfloat, DSfloat]:
    """(WindowCenter, WindowWidth) of a ``LINEAR_EXACT`` window that maps ``[lo, hi]`` onto the display range.

    The Decimal Strings (16 characters) are rounded so that the window still covers ``[lo, hi]``; a constant map
    (``hi == lo``) gets a window of width 1 centred on its value. ``LINEAR_EXACT`` (VOILUTFunction) is needed because
    a map's range is often narrower than 1, which the default ``LINEAR`` function does not allow.

    Args:
        lo: smallest value to show (maps to black).
        hi: largest value to show (maps to white).

    Returns:
        ``(center, width)`` as Decimal Strings with ``center - width / 2 <= lo`` and ``center + width / 2 >= hi``.
    """
    center = _ds(float(lo + hi) / 2.0)
    need = 2.0 * max(hi - float(center), float(center) - lo) if hi > lo else 1.0
    for factor in (1.0, 1.0 + 1e-12, 1.0 + 1e-9, 1.0 + 1e-6):
        width = _ds(need * factor)
        if float(center) - float(width) / 2 <= lo and float(center) + float(width) / 2 >= hi:
            break
    return center, width


def _ds(value: float) -> DSfloat:
    """A Decimal String of at most 16 characters whose float value is the written (rounded) one.

    ``DSfloat(x, auto_format=True)`` writes a rounded string but keeps the unrounded float; a reader sees the string.
    """
    return DSfloat(format_number_as_ds(float(value)))
