"""Faithfulness, localisation, sanity and statistics for saliency maps."""

from __future__ import annotations

from monai_saliency.metrics.localization import mask_energy, pointing_game, top_k_overlap, wsol_box_error
from monai_saliency.metrics.perturbation import deletion_curve, insertion_curve, mu_fidelity, stability
from monai_saliency.metrics.roc_auc import nmse, roc_auc
from monai_saliency.metrics.sanity import model_randomization_test
from monai_saliency.metrics.sparsity import fraction_below_median, gini_index, sparsity, top_k_mass
from monai_saliency.metrics.spectrum import high_frequency_power_ratio, radial_power_spectrum
from monai_saliency.metrics.stats import bootstrap_ci, paired_bootstrap_ci, paired_wilcoxon

__all__ = [
    "bootstrap_ci",
    "deletion_curve",
    "fraction_below_median",
    "gini_index",
    "high_frequency_power_ratio",
    "insertion_curve",
    "mask_energy",
    "model_randomization_test",
    "mu_fidelity",
    "nmse",
    "paired_bootstrap_ci",
    "paired_wilcoxon",
    "pointing_game",
    "radial_power_spectrum",
    "roc_auc",
    "sparsity",
    "stability",
    "top_k_mass",
    "top_k_overlap",
    "wsol_box_error",
]
