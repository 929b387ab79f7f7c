"""An evaluator for saliency runs over a user's folder: bad studies are reported by name, the rest processed."""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator
from monai.utils import CommonKeys

from monai_saliency.data.tolerant import FAILED_KEY

__all__ = ["FailedStudiesError", "SaliencyEvaluator", "as_bool"]

logger = logging.getLogger(__name__)


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def as_bool(value: Any, name: str) -> bool:
    """A command-line flag as a bool: ``python -m monai.bundle run --amp true`` passes the string ``"true"``.

    Args:
        value: a bool, 0/1, or one of ``true/false, 1/0, yes/no, on/off`` (any case).
        name: the option, for the error message.

    Returns:
        The flag.

    Raises:
        ValueError: for any other value (``"flase"`` must not silently mean True).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"--{name} must be true or false, got {value!r}.")


class FailedStudiesError(RuntimeError):
    """Raised at the end of a run in which some studies could not be read."""


class SaliencyEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` that skips studies a :class:`~monai_saliency.data.tolerant.TolerantDataset` could
    not load, logs each by name, processes every other study, and raises :class:`FailedStudiesError` (so the
    bundle exits non-zero) when the run completes with failures.

    ``amp`` (the bundles' ``--amp true``) runs the network and the explainers under ``torch.autocast("cuda")``
    (float16 where autocast casts; the maps are float32 or upcast by the explainers). It applies to CUDA only:
    on another device it is switched off with a warning. A string flag from the command line is accepted.

    Args:
        args: as ``SupervisedEvaluator``.
        raise_on_failure: raise at the end if any study failed (default True).
        kwargs: as ``SupervisedEvaluator``.

    Raises:
        ValueError: an ``amp`` that is not a boolean flag.
    """

    def __init__(self, *args: Any, raise_on_failure: bool = True, **kwargs: Any) -> None:
        amp = as_bool(kwargs.pop("amp", False), "amp")
        device = kwargs.get("device", args[0] if args else None)
        if amp and getattr(device, "type", str(device)).split(":")[0] != "cuda":
            logger.warning("--amp applies to CUDA only; running in full precision on %s.", device)
            amp = False
        kwargs["amp"] = amp
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
