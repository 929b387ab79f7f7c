"""Old import paths keep working for one release: moved names warn and forward, public re-exports stay silent."""

from __future__ import annotations

import importlib
import warnings

import pytest

from monai_saliency import analysis, core

MOVED_TO_CORE = sorted(core.__all__)
METHODS_PLUMBING = [  # what monai_saliency.methods exported before the move: public API, no warning
    "ActivationHooks",
    "check_input",
    "evaluation_mode",
    "find_layer",
    "frozen_parameters",
    "model_logits",
    "select_class",
    "wrap_like",
]


@pytest.mark.parametrize("name", MOVED_TO_CORE)
def test_methods_base_plumbing_warns_and_forwards_to_core(name):
    base = importlib.import_module("monai_saliency.methods.base")
    with pytest.warns(DeprecationWarning, match=f"methods.base.{name} moved to monai_saliency.core"):
        obj = getattr(base, name)
    assert obj is getattr(core, name)


def test_from_methods_base_import_statement_warns():
    with pytest.warns(DeprecationWarning, match="moved to monai_saliency.core"):
        from monai_saliency.methods.base import find_layer
    assert find_layer is core.find_layer


def test_methods_package_reexports_plumbing_and_explainer_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from monai_saliency import methods
        from monai_saliency.methods.base import Explainer

        for name in METHODS_PLUMBING:
            assert getattr(methods, name) is getattr(core, name)
        assert methods.Explainer is Explainer


def test_morch_old_paths_warn_and_forward_to_analysis():
    with pytest.warns(DeprecationWarning, match="moved to monai_saliency.analysis"):
        from monai_saliency.methods import MorchSaliency
    assert MorchSaliency is analysis.MorchSaliency
    with pytest.warns(DeprecationWarning, match="methods.morch.MorchSaliency moved"):
        from monai_saliency.methods.morch import MorchSaliency as Old
    assert Old is analysis.MorchSaliency
    with pytest.warns(DeprecationWarning, match="methods.morch.ORDERS moved"):
        from monai_saliency.methods.morch import ORDERS
    assert ORDERS is analysis.ORDERS


def test_unknown_names_still_raise_attribute_error():
    from monai_saliency import methods
    from monai_saliency.methods import base, morch

    for module in (methods, base, morch):
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            module.nope  # noqa: B018
