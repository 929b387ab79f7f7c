"""The pre-#18 module paths (``monai_saliency.transforms.fourier`` ...) still import, warn, and give the new objects."""

from __future__ import annotations

import importlib

import pytest

from monai_saliency import transforms
from monai_saliency.transforms import utils

OLD_PATHS = {
    "fourier": ["FourierLowPass", "FourierLowPassd"],
    "io": ["SaveMapsd", "ScaleToUnit", "ScaleToUnitd"],
    "pca": ["PCABackProject", "PCABackProjectd", "PCAProject", "PCAProjectd"],
    "signature": ["ImageSignature", "ImageSignatured", "gaussian_smooth"],
    "structured": ["StructuredProx", "StructuredProxd"],
}


@pytest.mark.parametrize("module, names", OLD_PATHS.items())
def test_old_path_warns_and_forwards(module, names):
    old = importlib.import_module(f"monai_saliency.transforms.{module}")
    assert sorted(old.__all__) == sorted(names)
    for name in names:
        with pytest.warns(DeprecationWarning, match=rf"transforms\.{module}\.{name} is deprecated.*import {name}"):
            obj = getattr(old, name)
        assert obj is getattr(transforms, name, None) or obj is getattr(utils, name)
    with pytest.raises(AttributeError, match="no attribute"):
        old.NotAName  # noqa: B018


# public names added after the move (#18) have no old path
NEW_NAMES = {"AntiAlias", "AntiAliasd"}


def test_every_public_name_is_served_by_an_old_path():
    served = {name for names in OLD_PATHS.values() for name in names}
    assert set(transforms.__all__) - NEW_NAMES <= served


def test_private_common_module_is_gone():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("monai_saliency.transforms._common")


def test_from_import_warns_at_the_callers_line():
    """``from old.path import Name`` (what user code did) warns once, attributed to the importing file."""
    with pytest.warns(DeprecationWarning) as record:
        from monai_saliency.transforms.io import SaveMapsd  # noqa: F401
    assert len(record) == 1 and record[0].filename == __file__
