"""An evaluator for saliency runs over a user's folder: a bad study costs only itself, at every stage."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import decollate_batch, list_data_collate
from monai.engines import SupervisedEvaluator
from monai.utils import CommonKeys

from monai_saliency.data.tolerant import FAILED_KEY
from monai_saliency.engines.cohort.messages import one_line

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

    With a ``cohort`` (:class:`monai_saliency.engines.cohort.CohortRun`) a bad study costs only itself at every
    stage: each study of a batch gets a fresh staging folder under ``data[folder_key]`` (the writers'
    ``folder_key``) before inference; when inference or post-processing of a batch of B > 1 raises, its studies are
    retried one by one; a study whose logits or maps hold NaN/Inf, or whose class count differs from the cohort's
    ``class_names``, fails alone; a good study's outputs are committed (moved into place, recorded with checksums
    and its softmax probabilities), a failed one's are discarded and recorded with its reason. The cohort reports
    the failures at the end (:meth:`CohortRun.finish`), so no :class:`FailedStudiesError` is raised then.

    ``amp`` (the bundles' ``--amp true``) runs the network and the explainers under ``torch.autocast("cuda")``
    (float16 where autocast casts; the maps are float32 or upcast by the explainers). It applies to CUDA only:
    on another device it is switched off with a warning. A string flag from the command line is accepted.

    Args:
        args: as ``SupervisedEvaluator``.
        raise_on_failure: raise at the end if any study failed to load (default True; not used with a cohort).
        cohort: the cohort run, or None for the plain behaviour.
        folder_key: the item key that receives the study's staging folder.
        logits_key: the output key of the network's logits (``SaliencyInferer``'s ``pred_key``); None for a network
            without class scores (segmentation): studies are recorded without a prediction.
        kwargs: as ``SupervisedEvaluator``.

    Raises:
        ValueError: an ``amp`` that is not a boolean flag.
    """

    def __init__(
        self,
        *args: Any,
        raise_on_failure: bool = True,
        cohort: Any = None,
        folder_key: str = "study_dir",
        logits_key: str | None = "logits",
        **kwargs: Any,
    ) -> None:
        amp = as_bool(kwargs.pop("amp", False), "amp")
        device = kwargs.get("device", args[0] if args else None)
        if amp and getattr(device, "type", str(device)).split(":")[0] != "cuda":
            logger.warning("--amp applies to CUDA only; running in full precision on %s.", device)
            amp = False
        kwargs["amp"] = amp
        super().__init__(*args, **kwargs)
        self.failures: list[tuple[str, str]] = []
        self.raise_on_failure = raise_on_failure
        self.cohort = cohort
        self.folder_key = folder_key
        self.logits_key = logits_key
        self.add_event_handler(Events.STARTED, lambda _: self.failures.clear())
        self.add_event_handler(Events.COMPLETED, self._report_failures)

    def run(self) -> None:
        """Run over the data loader; an empty shard (every study skipped, or fewer studies than ranks) is a no-op."""
        if self.cohort is not None and len(self.data_loader) == 0:
            logger.info("no study to process on this process.")
            return
        super().run()

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> Any:
        if isinstance(batchdata, dict) and FAILED_KEY in batchdata:
            batchdata = dict(batchdata)
            for name, error in batchdata.pop(FAILED_KEY):
                if self.cohort is not None:
                    self.cohort.fail(name, error)
                else:
                    logger.error("study %s could not be processed: %s", name, error)
                self.failures.append((name, error))
            if CommonKeys.IMAGE not in batchdata:
                engine.state.batch = []
                engine.state.output = []
                return []
            engine.state.batch = batchdata
        if self.cohort is None:
            return super()._iteration(engine, batchdata)
        batch, output = self._cohort_iteration(engine, batchdata)
        engine.state.batch, engine.state.output = batch, output
        return output

    def _cohort_iteration(self, engine: Engine, batchdata: dict[str, Any]) -> tuple[list, list]:
        """One batch under the cohort: stage, infer, post-process, check and commit; retry items of a failed batch."""
        studies = list(batchdata[self.cohort.study_key])
        try:
            staged = dict(batchdata)
            staged[self.folder_key] = [self.cohort.stage(s) for s in studies]
            engine.state.batch = staged
            super()._iteration(engine, staged)
            batch, output = engine.state.batch, engine.state.output
            if not isinstance(batch, list) or not isinstance(output, list):
                batch, output = decollate_batch(batch), decollate_batch(output)
        except Exception as exc:  # noqa: BLE001  inference or post-processing: isolate the bad study
            for s in studies:
                self.cohort.discard(s)
            if len(studies) > 1:
                items = decollate_batch(batchdata, detach=False)
                results = [self._cohort_iteration(engine, list_data_collate([item])) for item in items]
                return [b for r in results for b in r[0]], [o for r in results for o in r[1]]
            self._fail(studies[0], exc)
            return [], []
        good_b, good_o = [], []
        for b, o in zip(batch, output):
            study = b[self.cohort.study_key]
            try:
                self.cohort.commit(study, self._probabilities(o))
            except Exception as exc:  # noqa: BLE001  a bad output or an unsafe destination: only this study
                self._fail(study, exc)
                continue
            good_b.append(b)
            good_o.append(o)
        return good_b, good_o

    def _fail(self, study: str, exc: BaseException) -> None:
        self.cohort.fail(study, exc)
        self.failures.append((study, one_line(exc)))

    def _probabilities(self, output: dict[str, Any]) -> list[float] | None:
        """Softmax probabilities of one study's logits, after checking the logits and maps are finite.

        Raises:
            ValueError: NaN/Inf in the logits or a map, or a class count other than the cohort's ``class_names``.
        """
        pred = output.get(CommonKeys.PRED)
        logits = None
        if self.logits_key is not None:
            logits = output.get(self.logits_key, pred.get(self.logits_key) if isinstance(pred, dict) else None)
        tensors = {k: v for k, v in output.items() if isinstance(v, torch.Tensor) and k != CommonKeys.LABEL}
        for key, value in tensors.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                what = "input" if key == CommonKeys.IMAGE else f"output {key!r}"
                raise ValueError(f"the {what} holds NaN or Inf values; is the input file's data finite?")
        if logits is None:
            return None
        logits = torch.as_tensor(logits).detach().float().reshape(-1)
        names: Sequence[str] | None = getattr(self.cohort, "class_names", None)
        if names is not None and logits.numel() != len(names):
            raise ValueError(f"the network gave {logits.numel()} class scores, the run expects {len(names)} classes.")
        return logits.softmax(0).tolist()

    def _report_failures(self, _engine: Engine) -> None:
        if self.failures and self.raise_on_failure and self.cohort is None:
            names = "; ".join(f"{name} ({error})" for name, error in self.failures)
            raise FailedStudiesError(f"{len(self.failures)} studies could not be processed: {names}")
