"""A MONAI inferer that returns the prediction of a batch and computes its saliency maps."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import decollate_batch
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Compose
from monai.utils import CommonKeys
from torch import nn

from monai_saliency.core import TargetLike, as_target, model_logits, model_output
from monai_saliency.core.targets import ClassTarget, RegionTarget, RegressionTarget, Target
from monai_saliency.methods.base import Explainer
from monai_saliency.transforms import SaveMapsd, ScaleToUnitd

__all__ = ["SaliencyInferer", "explain_all", "select_explainers", "target_from_options"]

ExplainerSpec = Explainer | Callable[[nn.Module], Explainer]

_RETURNS = ("pred", "dict")
_ENGINE_KEYS = (CommonKeys.IMAGE, CommonKeys.LABEL, CommonKeys.PRED, CommonKeys.LOSS)


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network


class SaliencyInferer(Inferer):
    """Run the network and one or more explainers on a batch, in any MONAI evaluator or model-zoo bundle.

    Added to the evaluator's handlers as well (the default ``returns=None`` then means ``"pred"``), the inferer
    is a drop-in for a bundle's inferer: it returns exactly what ``inferer`` returns, so the engine's ``pred``,
    its post-processing and its handlers are unchanged, and :meth:`attach` moves the maps of each batch into
    ``engine.state.output`` under their own keys (the explainer names) before MONAI decollates the batch; with
    ``output_dir`` it also writes each item's maps (min-max scaled to [0, 1]) with :class:`SaveMapsd`. The
    two-line override that adds saliency to a model-zoo bundle (``inferer``, ``handlers`` and
    ``evaluator#val_handlers: "@handlers"`` are the zoo's names)::

        python -m monai.bundle run --config_file configs/inference.json \\
            --inferer "{'_target_': 'monai_saliency.engines.SaliencyInferer', 'output_dir': '@output_dir',
                        'explainers': {'gradcam': {'_target_': 'monai_saliency.methods.GradCAM',
                                                   'nn_module': '@network', 'target_layers': 'layer4'}}}" \\
            --evaluator#val_handlers '$@handlers + [@inferer]'

    Not attached (or with ``returns="dict"``) it returns ``{pred_key: scores (B, K), name: maps, ...}``
    (``pred_key`` defaults to ``"logits"``), which MONAI evaluators store under ``"pred"``;
    ``FlattenSubKeysd(keys="pred")`` lifts the entries to top-level keys for post transforms (the pipelines of
    this project's own bundles). With ``returns="pred"`` it returns the prediction even when used directly;
    :meth:`pop_maps` then hands out the maps of the last batch.

    Maps are MetaTensors carrying the batch's ``meta`` and ``applied_operations``, so ``Invertd`` and
    ``SaveImaged`` write them in the input's original geometry. Explainers enable autograd themselves, so the
    evaluator's ``torch.no_grad()`` needs no ``mode="train"`` workaround.

    Explainers built on the same costly raw map (a SmoothGrad and a FORGrad over a SmoothGrad with the same
    settings and ``reduce="none"``, a VanillaGrad and a StructuredGradient over it, ...) share it: it is computed
    once per batch (:func:`explain_all`), and every map equals the one its explainer computes alone.

    Explainers may be given built (they must wrap the evaluator's network, or its ``.module``) or as
    factories ``network -> Explainer``, built on the first call: either way hooks are registered once, not per
    batch. Class-specific explainers explain the predicted class of each item unless ``class_idx`` is set.

    Args:
        explainers: an explainer, or a mapping ``name -> explainer or factory``.
        class_idx: None explains each item's predicted class; an int or (B,) tensor fixes the class.
        target: instead of ``class_idx``, a target for every batch (:mod:`monai_saliency.core.targets`), e.g.
            ``RegionTarget(k, allow_empty=True)``: a segmentation network's predicted region of class ``k``, read
            from each batch; the prediction is then kept as the network returns it (``(B, K, *spatial)``).
        pred_key: key of the scores in the returned dict.
        inferer: inferer producing the prediction (default ``SimpleInferer``); it runs under ``no_grad``.
        returns: ``None`` (``"pred"`` once attached to an engine, else ``"dict"``), ``"pred"`` (the prediction;
            maps through :meth:`attach` or :meth:`pop_maps`) or ``"dict"`` (prediction and maps in one dict).
        output_dir: an attached inferer writes every item's maps there as ``{input name}_{explainer name}{ext}``.
        output_ext: ``".nii.gz"`` (2D or 3D maps) or an 8-bit format such as ``".png"`` (2D maps).
        scale: min-max scale each written map to [0, 1] (needed by 8-bit formats).
        save_transform: applied to each item before its maps are scaled and written; the item holds the batch's
            entries and the engine's outputs (maps under their names), so e.g. ``Invertd(keys=<names>,
            transform=<preprocessing>, orig_keys="image")`` writes the maps in each input's original grid.

    Raises:
        ValueError: if no explainer is given, a name is reserved (``pred_key``, or an engine key ``image``,
            ``label``, ``pred``, ``loss``), ``returns`` is unknown, ``output_dir`` is given with
            ``returns="dict"`` (or ``save_transform`` without ``output_dir``), both ``class_idx`` and ``target`` are
            given, or a built explainer wraps a different network.
    """

    def __init__(
        self,
        explainers: ExplainerSpec | Mapping[str, ExplainerSpec],
        class_idx: int | torch.Tensor | None = None,
        pred_key: str = "logits",
        target: TargetLike = None,
        inferer: Inferer | None = None,
        returns: str | None = None,
        output_dir: str | os.PathLike | None = None,
        output_ext: str = ".nii.gz",
        scale: bool = True,
        save_transform: Callable | None = None,
    ) -> None:
        super().__init__()
        specs = dict(explainers) if isinstance(explainers, Mapping) else {"saliency": explainers}
        if not specs:
            raise ValueError("give at least one explainer.")
        if returns is not None and returns not in _RETURNS:
            raise ValueError(f"returns must be None or one of {_RETURNS}, got {returns!r}.")
        reserved = {"dict": (pred_key,), "pred": _ENGINE_KEYS, None: (pred_key, *_ENGINE_KEYS)}[returns]
        clash = sorted(set(map(str, specs)) & set(reserved))
        if clash:
            raise ValueError(f"explainer names {clash} are reserved ({reserved}); rename them.")
        if output_dir is not None and returns == "dict":
            raise ValueError("output_dir needs the inferer attached to the engine; returns='dict' never is.")
        if save_transform is not None and output_dir is None:
            raise ValueError("save_transform acts on the maps written to output_dir; give output_dir too.")
        if target is not None and class_idx is not None:
            raise ValueError("give class_idx or target, not both.")
        self.specs = specs
        self.class_idx = class_idx
        self.target = None if target is None else as_target(target)
        self.pred_key = pred_key
        self.inferer = inferer or SimpleInferer()
        self.returns = returns
        self.mode = returns or "dict"
        self._attached = False
        keys = list(specs)
        self.saver: Callable | None = None
        if output_dir is not None:
            steps = [save_transform] if save_transform is not None else []
            steps += [ScaleToUnitd(keys)] if scale else []
            self.saver = Compose([*steps, SaveMapsd(keys, output_dir, output_ext)])
        self._bound: dict[str, Explainer] = {}
        self._network: nn.Module | None = None
        self._pending: dict[str, torch.Tensor] | None = None

    def _bind(self, network: nn.Module) -> dict[str, Explainer]:
        if self._network is network:
            return self._bound
        self.close()
        bound = {}
        for name, spec in self.specs.items():
            explainer = spec if isinstance(spec, Explainer) else spec(network)
            if not isinstance(explainer, Explainer):
                raise TypeError(f"explainer {name!r} must be an Explainer or a factory returning one.")
            if _unwrap(explainer.model) is not _unwrap(network):
                raise ValueError(
                    f"explainer {name!r} wraps a different model than the evaluator's network; build it on the same "
                    "network object (e.g. '@network' in a bundle config) or pass a factory."
                )
            bound[name] = explainer
        self._bound, self._network = bound, network
        return bound

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """Predict and explain ``inputs`` ``(B, C, *spatial)`` with ``network``.

        Returns:
            Attached or ``returns="pred"``: the output of ``inferer``, unchanged (the maps are kept for
            :meth:`attach` / :meth:`pop_maps`); else ``{pred_key: scores (B, K), name: maps}``.

        Raises:
            RuntimeError: if ``output_dir`` is set but the inferer is not attached to an engine, or with
                ``returns="pred"`` if the maps of the previous batch were never collected (they would be lost).
        """
        if self.saver is not None and not self._attached:
            raise RuntimeError(
                "output_dir is set but the SaliencyInferer is not attached to the engine, so no map would be "
                "written: add it to the evaluator's handlers too (in a bundle: "
                "--evaluator#val_handlers '$@handlers + [@inferer]')."
            )
        if self.mode == "pred" and self._pending is not None:
            raise RuntimeError(
                "the saliency maps of the previous batch were never collected: add the SaliencyInferer to the "
                "evaluator's handlers too (in a bundle: --evaluator#val_handlers '$@handlers + [@inferer]'), or "
                "call pop_maps() after each batch when using it directly."
            )
        explainers = self._bind(network)
        with torch.no_grad():
            pred = self.inferer(inputs, network, *args, **kwargs)
        if self.target is not None:  # bound by each explainer on this batch (e.g. its predicted region)
            scores, targets = model_output(pred), self.target
        else:
            scores = model_logits(pred)
            targets = scores.argmax(dim=1) if self.class_idx is None else self.class_idx
        maps = explain_all(explainers, inputs, targets)
        if self.mode == "dict":
            return {self.pred_key: scores, **maps}
        self._pending = maps
        return pred

    def pop_maps(self) -> dict[str, torch.Tensor]:
        """Maps ``{name: (B, C, *spatial)}`` of the last batch (attached or ``returns="pred"``), handed out once.

        Raises:
            RuntimeError: if no batch has been explained since the last call.
        """
        if self._pending is None:
            raise RuntimeError("no saliency maps pending: run the inferer on a batch first.")
        maps, self._pending = self._pending, None
        return maps

    def attach(self, engine: Engine) -> None:
        """Carry the maps of each iteration of ``engine`` (a MONAI evaluator using this inferer) to their keys.

        On ``FORWARD_COMPLETED`` the maps join ``engine.state.output`` beside ``pred`` (so MONAI decollates
        them with it and post transforms see them as ``output[name]``); with ``output_dir`` each item's maps are
        written on ``ITERATION_COMPLETED``, after post-processing.

        Raises:
            ValueError: with ``returns="dict"``, or if ``engine`` runs another inferer.
        """
        if self.returns == "dict":
            raise ValueError("attach needs returns=None or 'pred'; with returns='dict' the maps are already in 'pred'.")
        if getattr(engine, "inferer", self) is not self:
            raise ValueError("this SaliencyInferer is not the engine's inferer; set it as the evaluator's inferer.")
        self.mode, self._attached = "pred", True
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._to_output)
        if self.saver is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._save)

    def _reset(self, _engine: Engine) -> None:
        self._pending = None

    def _to_output(self, engine: Engine) -> None:
        output = engine.state.output
        maps = self.pop_maps()
        clash = sorted(set(maps) & set(output))
        if clash:
            raise ValueError(f"explainer names {clash} are already keys of the engine's output; rename them.")
        output.update(maps)

    def _save(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        if not isinstance(output, list):  # an evaluator built with decollate=False
            output = decollate_batch(output)
            batch = decollate_batch(batch) if isinstance(batch, Mapping) else batch
        if not isinstance(batch, list) or len(batch) != len(output):
            batch = [{}] * len(output)
        for item, out in zip(batch, output):
            self.saver({**item, **out} if isinstance(item, Mapping) else dict(out))

    def close(self) -> None:
        """Remove the hooks of explainers this inferer built from factories."""
        for name, explainer in self._bound.items():
            if not isinstance(self.specs[name], Explainer):
                explainer.close()
        self._bound, self._network = {}, None


def explain_all(explainers: Mapping[str, Explainer], inputs: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
    """Every explainer's maps of ``inputs``, each raw map shared by several explainers computed once.

    Explainers whose :meth:`~monai_saliency.methods.base.Explainer.shared_source` keys are equal (e.g. a
    ``SmoothGrad(reduce="abs_sum")`` and a ``FORGrad`` over a ``SmoothGrad(reduce="none")`` with otherwise equal
    settings) get the raw map computed once by its source and passed as ``base_map``; the maps equal independent
    calls. Class-agnostic explainers are called without targets.

    Args:
        explainers: ``name -> explainer``.
        inputs: the batch ``(B, C, *spatial)``.
        targets: class indices ``(B,)``, an int, or a target, for class-specific explainers.

    Returns:
        ``{name: maps}`` in the order of ``explainers``.
    """
    sources: dict[str, Any] = {}
    groups: dict[Any, list[str]] = {}
    for name, explainer in explainers.items():
        source = None if explainer.class_agnostic else explainer.shared_source()
        if source is not None:
            sources[name] = source
            groups.setdefault(source[0], []).append(name)
    raw: dict[Any, torch.Tensor] = {}
    maps = {}
    for name, explainer in explainers.items():
        spec = None if explainer.class_agnostic else targets
        key = sources[name][0] if name in sources else None
        if key is None or len(groups[key]) < 2:
            maps[name] = explainer(inputs, spec)
            continue
        if key not in raw:
            raw[key] = sources[name][1].base_map(inputs, spec)
        maps[name] = explainer(inputs, spec, base_map=raw[key])
    return maps


def select_explainers(
    explainers: Mapping[str, Any],
    methods: str | Sequence[str] | None = "all",
    required: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The explainers a run computes: a bundle's ``--methods`` option.

    Explainers left out are closed (their hooks removed, so they cost nothing on the network's forward passes).

    Args:
        explainers: ``name -> explainer`` (a bundle's ``explainers``).
        methods: ``"all"`` or None for every explainer, a name, a comma-separated string or a sequence of names
            (their order is the order of ``explainers``).
        required: ``{option: name}`` names other options use (e.g. ``{"derived_key": "sigact_spatial"}``, the map
            a bundle writes as DICOM / GIF), which must be selected.

    Returns:
        ``{name: explainer}`` of the chosen names.

    Raises:
        ValueError: for an unknown or duplicate name, an empty choice, or a required name that is not chosen.
    """
    valid = list(explainers)
    if methods is None or (isinstance(methods, str) and methods.strip().lower() == "all"):
        chosen = valid
    else:
        names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]
        unknown = [m for m in names if m not in explainers]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; valid methods are {valid} (or 'all').")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"methods must name each method at most once and at least one, got {names}.")
        chosen = [m for m in valid if m in names]
    for option, name in (required or {}).items():
        if name not in chosen:
            raise ValueError(
                f"{option}={name!r} is not among the chosen methods {chosen}; add it to methods or set {option} to "
                "one of them."
            )
    for name in valid:
        if name not in chosen and hasattr(explainers[name], "close"):
            explainers[name].close()
    return {name: explainers[name] for name in chosen}


TARGET_KINDS = ("class", "region", "regression")


def target_from_options(kind: str | None, index: int | None = None, **options: Any) -> Target | None:
    """A target from command-line style options (a bundle's ``--target region --target_class 1``).

    Args:
        kind: ``"class"`` (:class:`ClassTarget`; ``index`` None is the argmax), ``"region"`` (:class:`RegionTarget`
            of class ``index``, the predicted region by default, empty regions allowed: an item where the class
            is predicted nowhere gets an all-zero map) or ``"regression"`` (:class:`RegressionTarget` of unit
            ``index``, default 0); None gives None (the explainer's default, the argmax class).
        index: the class / unit.
        options: passed to the target's constructor (e.g. ``reduction="mean"``, ``sign=-1.0``).

    Returns:
        The target, or None.

    Raises:
        ValueError: for an unknown kind, or a region target without a class.
    """
    if kind is None:
        return None
    index = None if index is None else int(index)
    if kind == "class":
        return ClassTarget(index, **options)
    if kind == "region":
        if index is None:
            raise ValueError("--target region needs --target_class k (the class whose predicted region is explained).")
        return RegionTarget(index, **{"allow_empty": True, **options})
    if kind == "regression":
        return RegressionTarget(0 if index is None else index, **options)
    raise ValueError(f"unknown target {kind!r}; choose one of {TARGET_KINDS}.")
