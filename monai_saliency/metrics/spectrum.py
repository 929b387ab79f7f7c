"""Fourier signature of saliency maps: high-frequency power ratio and radial power spectrum (FORGrad, seed 003).

Frequencies are normalised, in cycles per voxel (``torch.fft.fftfreq``: in [-0.5, 0.5) per axis), so the
numbers compare across image sizes; the radius is ``ρ = sqrt(Σ_d f_d²)`` (up to ``0.5 sqrt(D)`` in a corner).
Maps ``(B, C, *spatial)``: the power is computed per channel over the spatial axes and summed over channels.

Direction: a lower high-frequency ratio means a smoother map (fewer of the high-frequency artifacts that
seed 003 attributes to max pooling); it is a descriptor, not a faithfulness score.
"""

from __future__ import annotations

import math

import torch

from monai_saliency.metrics._common import check_maps, check_positive_int, safe_ratio

__all__ = ["high_frequency_power_ratio", "power_spectrum", "radial_power_spectrum"]


def _radius(spatial, device) -> torch.Tensor:
    axes = [torch.fft.fftfreq(n, device=device, dtype=torch.float64) for n in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(g**2 for g in grids))


def power_spectrum(maps: torch.Tensor, remove_mean: bool = True) -> torch.Tensor:
    """``|FFT(map)|²`` over the spatial axes, summed over channels -> ``(B, *spatial)`` float64 (unshifted).

    ``remove_mean`` subtracts each channel's mean first, so the zero frequency carries no power.
    """
    maps = check_maps(maps).double()
    if remove_mean:
        maps = maps - maps.mean(dim=tuple(range(2, maps.ndim)), keepdim=True)
    spec = torch.fft.fftn(maps, dim=tuple(range(2, maps.ndim)))
    return (spec.real**2 + spec.imag**2).sum(1)


def high_frequency_power_ratio(maps: torch.Tensor, cutoff: float = 0.25, remove_mean: bool = True) -> torch.Tensor:
    """Fraction of a map's spectral power at normalised radius ``ρ > cutoff`` cycles/voxel.

    Default cut-off 0.25 = half the Nyquist frequency per axis. A map without power (constant with
    ``remove_mean``, or zero) gives 0.

    Args:
        maps: ``(B, C, *spatial)``.
        cutoff: radius in cycles per voxel, in (0, 0.5 sqrt(D)).
        remove_mean: exclude the mean (zero frequency) from the total.

    Returns:
        ``(B,)`` float64 tensor in [0, 1].

    Raises:
        ValueError: for NaN maps or a cutoff outside the range.
    """
    maps = check_maps(maps)
    d = maps.ndim - 2
    if not (math.isfinite(cutoff) and 0 < cutoff < 0.5 * math.sqrt(d)):
        raise ValueError(f"cutoff must be in (0, {0.5 * math.sqrt(d):.3f}) cycles per voxel, got {cutoff!r}.")
    p = power_spectrum(maps, remove_mean).reshape(maps.shape[0], -1)
    high = _radius(maps.shape[2:], maps.device).reshape(-1) > cutoff
    total = p.sum(1)
    return safe_ratio((p * high).sum(1), total, 0.0)


def radial_power_spectrum(
    maps: torch.Tensor, n_bins: int = 32, remove_mean: bool = True, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean spectral power per radial frequency bin (the "Fourier signature" curves of seed 003).

    Bins split ``[0, 0.5]`` cycles/voxel evenly; corner frequencies above 0.5 go to the last bin.

    Args:
        maps: ``(B, C, *spatial)``. n_bins: number of bins. remove_mean: drop the mean first.
        normalize: divide each item's curve by its total power (curves then sum to ~1 weighted by bin counts).

    Returns:
        ``(curves (B, n_bins) float64, bin_centres (n_bins,))``; empty bins hold 0.
    """
    maps = check_maps(maps)
    n_bins = check_positive_int(n_bins, "n_bins")
    p = power_spectrum(maps, remove_mean).reshape(maps.shape[0], -1)
    rho = _radius(maps.shape[2:], maps.device).reshape(-1)
    bins = (rho / 0.5 * n_bins).long().clamp_(max=n_bins - 1)
    counts = torch.zeros(n_bins, dtype=torch.float64, device=bins.device).index_add_(
        0, bins, torch.ones_like(bins, dtype=torch.float64)
    )  # bincount without its host read of max(bins)
    sums = torch.zeros(p.shape[0], n_bins, dtype=torch.float64, device=p.device).index_add_(1, bins, p)
    curves = sums / counts.clamp(min=1)
    if normalize:
        total = p.sum(1, keepdim=True)
        curves = curves / torch.where(total > 0, total, torch.ones_like(total))
    centres = (torch.arange(n_bins, dtype=torch.float64) + 0.5) * 0.5 / n_bins
    return curves, centres
