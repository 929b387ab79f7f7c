"""Faithfulness, localisation, sanity and statistics for saliency maps."""

from __future__ import annotations

from monai_saliency.metrics.localization import mask_energy, pointing_game, wsol_box_error
from monai_saliency.metrics.perturbation import deletion_curve, insertion_curve, mu_fidelity, stability
from monai_saliency.metrics.sanity import model_randomization_test
from monai_saliency.metrics.sparsity import fraction_below_median, gini_index, sparsity, top_k_mass
from monai_saliency.metrics.spectrum import high_frequency_power_ratio, radial_power_spectrum
from monai_saliency.metrics.stats import bootstrap_ci, paired_bootstrap_ci, paired_wilcoxon

__all__ = [
    "mask_energy",
    "pointing_game",
    "wsol_box_error",
    "deletion_curve",
    "insertion_curve",
    "mu_fidelity",
    "stability",
    "model_randomization_test",
    "fraction_below_median",
    "gini_index",
    "sparsity",
    "top_k_mass",
    "high_frequency_power_ratio",
    "radial_power_spectrum",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "paired_wilcoxon",
]
