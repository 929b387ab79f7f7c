"""Named sub-modules of a network."""

from __future__ import annotations

import difflib

from torch import nn

__all__ = ["find_layer"]


def find_layer(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """Find a sub-module by its dotted name, tolerating DDP/DataParallel's ``module.`` prefix.

    Args:
        model: the network.
        name: dotted name as printed by ``model.named_modules()``, with or without ``module.``.

    Returns:
        ``(resolved_name, module)``.

    Raises:
        ValueError: if no layer matches; the message lists the closest names.
    """
    modules = dict(model.named_modules())
    candidates = [name, f"module.{name}"]
    if name.startswith("module."):
        candidates.append(name[len("module.") :])
    for cand in candidates:
        if cand and cand in modules:
            return cand, modules[cand]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f" Closest names: {close}." if close else f" Available layers start with: {names[:8]}."
    raise ValueError(f"layer {name!r} not found in {type(model).__name__}.{hint}")
