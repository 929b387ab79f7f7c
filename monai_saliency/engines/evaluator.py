"""An evaluator for saliency runs over a user's folder: bad studies are reported by name, the rest processed."""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator
from monai.utils import CommonKeys

from monai_saliency.data.tolerant import FAILED_KEY

__all__ = ["FailedStudiesError", "SaliencyEvaluator"]

logger = logging.getLogger(__name__)


class FailedStudiesError(RuntimeError):
    """Raised at the end of a run in which some studies could not be read."""


class SaliencyEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` that skips studies a :class:`~monai_saliency.data.tolerant.TolerantDataset` could
    not load, logs each by name, processes every other study, and raises :class:`FailedStudiesError` (so the
    bundle exits non-zero) when the run completes with failures.

    Args:
        args: as ``SupervisedEvaluator``.
        raise_on_failure: raise at the end if any study failed (default True).
        kwargs: as ``SupervisedEvaluator``.
    """

    def __init__(self, *args: Any, raise_on_failure: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[tuple[str, str]] = []
        self.raise_on_failure = raise_on_failure
        self.add_event_handler(Events.STARTED, lambda _: self.failures.clear())
        self.add_event_handler(Events.COMPLETED, self._report_failures)

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> Any:
        if isinstance(batchdata, dict) and FAILED_KEY in batchdata:
            batchdata = dict(batchdata)
            for name, error in batchdata.pop(FAILED_KEY):
                logger.error("study %s could not be processed: %s", name, error)
                self.failures.append((name, error))
            if CommonKeys.IMAGE not in batchdata:
                engine.state.batch = []
                return []
            engine.state.batch = batchdata
        return super()._iteration(engine, batchdata)

    def _report_failures(self, _engine: Engine) -> None:
        if self.failures and self.raise_on_failure:
            names = "; ".join(f"{name} ({error})" for name, error in self.failures)
            raise FailedStudiesError(f"{len(self.failures)} studies could not be processed: {names}")
