"""Short messages for cohort runs: one-line failure reasons, and warnings that repeat per study shown once."""

from __future__ import annotations

import logging
import warnings
from typing import Any

__all__ = ["OncePerMessage", "install_once_filters", "one_line", "remove_once_filters"]

_MAX_REASON = 500


def one_line(error: BaseException | str) -> str:
    """A failure reason on one line: the innermost cause of an exception chain (MONAI wraps transform errors in
    ``RuntimeError("applying transform ...")``) as ``Type: message``, newlines folded, at most 500 characters."""
    if isinstance(error, BaseException):
        while error.__cause__ is not None and error.__cause__ is not error:
            error = error.__cause__
        text = f"{type(error).__name__}: {error}"
    else:
        text = str(error)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


class OncePerMessage(logging.Filter):
    """A logging filter that lets each (logger, level, message) of level WARNING and above through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.levelno >= logging.ERROR:
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_INSTALLED: dict[str, Any] = {}


def install_once_filters() -> None:
    """Show every repeated warning once per process: Python warnings by (category, message), and log records of
    level WARNING by (logger, message) on every handler configured now (the bundle's logging.conf has run).

    Idempotent; errors are never filtered.
    """
    flt = _INSTALLED.setdefault("filter", OncePerMessage())
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for handler in lg.handlers:
            if flt not in handler.filters:
                handler.addFilter(flt)
    if "showwarning" not in _INSTALLED:
        original = _INSTALLED["showwarning"] = warnings.showwarning
        seen: set[tuple[type, str]] = set()

        def show_once(message, category, filename, lineno, file=None, line=None):
            key = (category, str(message))
            if key not in seen:
                seen.add(key)
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show_once


def remove_once_filters() -> None:
    """Undo :func:`install_once_filters` (at the end of a run, so that a process that goes on, e.g. a notebook or a
    test session, sees its warnings again). Idempotent."""
    flt = _INSTALLED.pop("filter", None)
    if flt is not None:
        loggers = [logging.getLogger()] + [
            lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
        ]
        for lg in loggers:
            for handler in lg.handlers:
                handler.removeFilter(flt)
    original = _INSTALLED.pop("showwarning", None)
    if original is not None:
        warnings.showwarning = original
