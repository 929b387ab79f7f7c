"""A small process-wide cache of constant matrices (DCT, interpolation), bounded in bytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["cached"]

#: constant matrices by kind, shape, dtype and device, least recently used first; bounded in bytes so that inputs of
#: ever new sizes cannot grow it without limit
CACHED_MATRICES: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()
CACHE_MAX_BYTES = 32 << 20


def nbytes(value: torch.Tensor) -> int:
    """Bytes held by a cached tensor."""
    return value.numel() * value.element_size()


def cached(key: tuple[Any, ...], build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The cached tensor of ``key``, built by ``build()`` on a miss.

    Values are built outside inference mode (a tensor created under ``torch.inference_mode()`` and cached there would
    break a later autograd caller that uses it). The cache keeps the most recently used values up to
    ``CACHE_MAX_BYTES``; a value above a quarter of that is returned without being cached.

    Args:
        key: hashable description of the value (kind, sizes, dtype, device).
        build: builds the value.

    Returns:
        The value.
    """
    value = CACHED_MATRICES.get(key)
    if value is not None:
        CACHED_MATRICES.move_to_end(key)
        return value
    with torch.inference_mode(False):
        value = build()
    size = nbytes(value)
    if size <= CACHE_MAX_BYTES // 4:
        CACHED_MATRICES[key] = value
        total = sum(nbytes(v) for v in CACHED_MATRICES.values())
        while total > CACHE_MAX_BYTES:
            _, dropped = CACHED_MATRICES.popitem(last=False)
            total -= nbytes(dropped)
    return value
