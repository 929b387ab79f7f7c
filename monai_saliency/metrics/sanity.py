"""Model-randomisation sanity checks for saliency maps (Adebayo et al. 2018), on a copy of the model.

* cascading: re-initialise layers one after another from the output towards the input, cumulatively;
* independent: re-initialise one layer at a time, the others keep their trained weights.

At each stage the explainer is rebuilt on the randomised copy (``explainer_factory(model_copy)``) and its
maps are compared with the maps of the trained model by the Spearman rank correlation of ``|map|`` and by
the SSIM of the min-max normalised ``|map|``. A method whose maps do not change when the weights do is not
explaining the model. **Lower similarity after randomisation is better** (the method passes).

Pass/fail rule (ours; Adebayo et al. judge visually): the check passes when the mean Spearman similarity
is below ``max_similarity`` (default 0.5) at the last cascading stage (every listed layer randomised), or,
in independent mode, averaged over all stages.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from monai_saliency.core import explainer_target, find_layer
from monai_saliency.metrics._common import (
    check_map_for_input,
    check_model_input,
    location_map,
    plain,
    resolve_class,
    rowwise_corr,
)
from monai_saliency.ops.normalize import minmax_normalize

__all__ = ["SanityResult", "model_randomization_test", "parameter_layers", "randomize_layer", "ssim_nd"]


@dataclass
class SanityResult:
    """Similarities of randomised-model maps to the trained-model maps.

    Attributes:
        mode: ``"cascading"`` or ``"independent"``.
        stages: name of the layer randomised at each stage (cascading: cumulatively, output first).
        spearman: ``(n_stages, B)`` Spearman rank correlation of ``|map|`` with the original.
        ssim: ``(n_stages, B)`` SSIM of min-max normalised ``|map|`` with the original.
        passed: the pass/fail rule of the module docstring.
        score: the similarity the rule compared with ``max_similarity``.
        maps: original then per-stage maps (only with ``keep_maps=True``), for figures.
    """

    mode: str
    stages: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor
    passed: bool
    score: float
    maps: list[torch.Tensor] = field(default_factory=list)


def ssim_nd(a: torch.Tensor, b: torch.Tensor, win_size: int = 7, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of ``(B, *spatial)`` images, 1-3 spatial axes, batched.

    Same definition as ``skimage.metrics.structural_similarity`` with its defaults (uniform ``win_size``
    window, sample covariance, K1 = 0.01, K2 = 0.03, mean over the window positions that fit inside the
    image). ``win_size`` is reduced to the largest odd size that fits the smallest axis.

    Raises:
        ValueError: different shapes, more than 3 or no spatial axes, an axis shorter than 3.
    """
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}.")
    d = a.ndim - 1
    if not 1 <= d <= 3:
        raise ValueError(f"SSIM supports 1 to 3 spatial axes, got shape {tuple(a.shape)}.")
    w = min(int(win_size), *a.shape[1:])
    w = w if w % 2 else w - 1
    if w < 3:
        raise ValueError(f"SSIM needs every spatial axis >= 3, got {tuple(a.shape[1:])}.")
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[d - 1]
    x, y = a.double()[:, None], b.double()[:, None]
    stack = pool(torch.cat([x, y, x * x, y * y, x * y], dim=1), w, stride=1)
    ux, uy, uxx, uyy, uxy = stack.unbind(1)
    cov_norm = w**d / (w**d - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(s.shape[0], -1).mean(1)


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, in registration (input-to-output) order."""
    return [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def randomize_layer(module: nn.Module, generator_seed: int) -> None:
    """Re-initialise one layer in place: its own ``reset_parameters()`` under a fixed seed, else N(0, std²)
    with each parameter's own standard deviation (0.02 for constant parameters). The global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                std = float(p.std()) if p.numel() > 1 else 0.0
                p.normal_(0.0, std if std > 0 else 0.02)


def _magnitude(maps: torch.Tensor) -> torch.Tensor:
    return location_map(maps, "auto").abs()


def model_randomization_test(
    model: nn.Module,
    explainer_factory: Callable[[nn.Module], Callable[..., torch.Tensor]],
    x: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    layers: Sequence[str] | None = None,
    mode: str = "cascading",
    max_similarity: float = 0.5,
    seed: int = 0,
    keep_maps: bool = False,
    win_size: int = 7,
) -> SanityResult:
    """Cascading or independent model-parameter randomisation test (Adebayo et al. 2018).

    The model itself is never modified: every stage works on a deep copy. The explained class is fixed to
    the trained model's (``class_idx`` or its argmax) for every stage.

    Args:
        model: trained classifier.
        explainer_factory: ``model -> explainer`` with ``explainer(x, class_idx) -> maps``, e.g.
            ``lambda m: GradCAM(m, target_layers="features.7")``; explainers with ``close()`` are closed.
        x: input batch ``(B, C, *spatial)``, 1-3 spatial axes (video ``(T, H, W)`` included).
        class_idx: explained class; None -> the trained model's argmax; or a target
            (:mod:`monai_saliency.core.targets`), bound once on the trained model (a predicted region stays fixed).
        layers: layer names to randomise in input-to-output order (default: every module owning parameters).
            Cascading randomises them from the last one backwards.
        mode: ``"cascading"`` or ``"independent"``.
        max_similarity: pass threshold on the mean Spearman similarity (see the module docstring).
        seed: base seed of the re-initialisation (stage ``i`` uses a seed mixed from ``(seed, i)``).
        keep_maps: keep the original and per-stage maps in the result (for figures).
        win_size: SSIM window.

    Returns:
        :class:`SanityResult`.

    Raises:
        ValueError: unknown mode or layer, no layer with parameters, maps that do not match the input.
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}.")
    x = check_model_input(x)
    names = parameter_layers(model) if layers is None else [find_layer(model, n)[0] for n in layers]
    if not names:
        raise ValueError("the model has no layer with parameters to randomise; pass layers=[...].")
    idx = explainer_target(resolve_class(model, x, class_idx))

    def explain(net: nn.Module) -> torch.Tensor:
        explainer = explainer_factory(net)
        try:
            maps = explainer(x, idx)
        finally:
            if hasattr(explainer, "close"):
                explainer.close()
        return check_map_for_input(plain(maps).detach(), x, "explainer output")

    ref = _magnitude(explain(model))
    b = ref.shape[0]
    ref_flat = ref.reshape(b, -1).cpu().numpy()
    ref_norm = minmax_normalize(ref)
    order = list(reversed(names)) if mode == "cascading" else list(names)
    spear, ssim, kept = [], [], [ref] if keep_maps else []
    net = copy.deepcopy(model)
    for i, name in enumerate(order):
        if mode == "independent":
            net = copy.deepcopy(model)
        # mixed seed: a plain `seed + i` can replay the seed the model was built with (torch.manual_seed(0)
        # then construction) and re-create the trained weights exactly
        stage_seed = int(np.random.SeedSequence([int(seed), i, 0x5A17]).generate_state(1)[0])
        randomize_layer(dict(net.named_modules())[name], stage_seed)
        cur = _magnitude(explain(net))
        spear.append(rowwise_corr(ref_flat, cur.reshape(b, -1).cpu().numpy(), "spearman"))
        ssim.append(ssim_nd(ref_norm, minmax_normalize(cur), win_size).cpu().numpy())
        if keep_maps:
            kept.append(cur)
    spearman = torch.from_numpy(np.stack(spear))
    score = float(spearman[-1].mean()) if mode == "cascading" else float(spearman.mean())
    return SanityResult(
        mode=mode,
        stages=order,
        spearman=spearman,
        ssim=torch.from_numpy(np.stack(ssim)),
        passed=score < max_similarity,
        score=score,
        maps=kept,
    )
