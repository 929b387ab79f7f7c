"""Helpers of the deprecation shims kept at old import paths for one release (not public API)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["bundle_scripts", "forward_getattr", "forward_module", "warn_moved"]

#: bundles/ of the source checkout this package is imported from (bundle glue lives there, not in the package)
BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """Emit the ``DeprecationWarning`` of a name or module that moved from ``old`` to ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}.", DeprecationWarning, stacklevel
    )


def bundle_scripts(bundle: str, module: str) -> ModuleType:
    """``bundles/<bundle>/scripts/<module>.py`` imported as a submodule of a private package (every bundle's
    ``scripts`` package has the same name, so they cannot all be imported as ``scripts``).

    Raises:
        ImportError: the bundle's scripts are not in this checkout.
    """
    package = f"_monai_saliency_bundle_{bundle}_scripts"
    if package not in sys.modules:
        folder = BUNDLES / bundle / "scripts"
        init = folder / "__init__.py"
        if not init.is_file():
            raise ImportError(
                f"the {bundle} bundle's scripts are not at {folder}; run them from the bundle (its root on sys.path)."
            )
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(folder)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[package] = pkg
        spec.loader.exec_module(pkg)
    return importlib.import_module(f"{package}.{module}")


def forward_getattr(old_module: str, targets: Mapping[str, tuple[str, Callable[[], Any]]]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for a shim: ``targets[name] = (new location text, loader of the value)``;
    each access warns and forwards."""

    def __getattr__(name: str) -> Any:
        if name not in targets:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        new, load = targets[name]
        warn_moved(f"{old_module}.{name}", new)
        return load()

    return __getattr__


def forward_module(
    old_module: str, new_modules: Sequence[str], removed: Mapping[str, str] | None = None
) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for a module that was split/moved: every name in a new module's ``__all__``
    is forwarded from ``old_module`` with a warning; ``removed[name]`` is the hint of a name that is gone."""

    def __getattr__(name: str) -> Any:
        for new in new_modules:
            module = importlib.import_module(new)
            if name in getattr(module, "__all__", ()):
                warn_moved(f"{old_module}.{name}", f"{new}.{name}")
                return getattr(module, name)
        if removed and name in removed:
            raise AttributeError(f"{old_module}.{name} was removed: {removed[name]}")
        raise AttributeError(f"module {old_module!r} has no attribute {name!r}")

    return __getattr__
