"""Per-item random draws that do not depend on how items are batched.

A random saliency method (SmoothGrad) or metric (μ-fidelity, stability) should give an item the same result alone,
in any batch, at any position in it, for any chunk size and across runs. Drawing from one generator over the whole
batch breaks that: the draws an item gets depend on its batch-mates and its position. Here each draw instead comes
from a generator seeded by ``(seed, item key, draw index)``, where the item key is a digest of the item's own values
(:func:`item_keys`). Hashing an item costs one pass over its bytes, negligible next to the forward passes a random
method makes.

Draws are made on the input's device when it has a generator (CPU, CUDA), else on the CPU and moved. CPU and CUDA
generators give different streams: the same seed gives the same draws on one device type, not across them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

__all__ = ["check_seed", "draw_seed", "item_keys", "keyed_draws"]

_SEED_BYTES = 16


def check_seed(seed: int | None, allow_none: bool = True) -> int | None:
    """Validate a seed: an int in ``[-2**127, 2**127)`` (or None when allowed).

    Raises:
        TypeError: for a non-integer seed (bools included).
    """
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**127) <= seed < 2**127:
        raise TypeError(f"seed must be an int in [-2**127, 2**127){' or None' if allow_none else ''}, got {seed!r}.")
    return seed


def item_keys(x: torch.Tensor) -> list[bytes]:
    """A 16-byte digest (BLAKE2b) of each item's values, dtype and shape: the identity of an item, whatever its batch.

    On the CPU the digest hashes the item's bytes. On another device the bytes stay there: a 256-bit fingerprint
    per item is computed on the device (:func:`device_fingerprints`) and only those ``32 * B`` bytes are copied to
    the host and hashed (so keys, like the draws, differ between device types). A ``meta`` batch has no values: its
    items share one key.

    Args:
        x: batch ``(B, ...)``.

    Returns:
        ``B`` digests; equal items give equal digests.
    """
    b = x.shape[0]
    tag = f"{x.dtype}{tuple(x.shape[1:])}".encode()
    if x.device.type == "meta":
        return [hashlib.blake2b(tag, digest_size=16).digest()] * b
    if x.device.type == "cpu":
        raw = x.detach().as_subclass(torch.Tensor).reshape(b, -1).contiguous().view(torch.uint8).numpy()
    else:
        raw = device_fingerprints(x).cpu().numpy()  # (B, 4) int64: the only bytes that leave the device
    return [hashlib.blake2b(row.tobytes() + tag, digest_size=16).digest() for row in raw]


_MIX = (-7046029254386353131, -4658895280553007687, 1442695040888963407, -2685821657736338717)  # odd 64-bit


def device_fingerprints(x: torch.Tensor, chunk: int = 1 << 22) -> torch.Tensor:
    """``(B, 4)`` int64 fingerprints of a batch's items, computed on its device.

    Each item's bytes are read as little-endian 32-bit words ``u_i`` (zero-padded); fingerprint ``j`` is
    ``sum_i u_i * h_j(i)`` modulo ``2**64``, with ``h_j`` a splitmix-style hash of the word position (integer
    arithmetic: exact and independent of the summation order). Equal items give equal fingerprints; a changed word
    changes each of the four sums unless its weight difference vanishes modulo ``2**64``.

    Args:
        x: batch ``(B, ...)`` of any dtype.
        chunk: words per pass (bounds the int64 temporaries).

    Returns:
        ``(B, 4)`` int64 tensor on ``x``'s device.
    """
    b = x.shape[0]
    raw = x.detach().as_subclass(torch.Tensor).reshape(b, -1).contiguous().view(torch.uint8)
    pad = (-raw.shape[1]) % 4
    if pad:
        raw = torch.cat([raw, raw.new_zeros(b, pad)], 1)
    words = raw.view(torch.int32)
    out = torch.zeros(b, len(_MIX), dtype=torch.int64, device=x.device)
    for start in range(0, words.shape[1], chunk):
        u = words[:, start : start + chunk].to(torch.int64) & 0xFFFFFFFF
        pos = torch.arange(start, start + u.shape[1], dtype=torch.int64, device=x.device)
        for j, k in enumerate(_MIX):
            h = (pos + (j + 1)) * k
            h = (h ^ (h >> 31)) * _MIX[(j + 1) % len(_MIX)]
            out[:, j] += (u * (h ^ (h >> 29))).sum(1)
    return out


def draw_seed(seed: int, key: bytes, index: int) -> int:
    """The 63-bit generator seed of draw ``index`` of the item with digest ``key`` under ``seed``."""
    msg = key + int(seed).to_bytes(_SEED_BYTES, "little", signed=True) + int(index).to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(msg, digest_size=8).digest(), "little") >> 1


def _device_generator(device: torch.device) -> torch.Generator:
    try:
        return torch.Generator(device=device)
    except RuntimeError:  # no generator for this device type: draw on the CPU and move
        return torch.Generator()


def keyed_draws(
    sampler: Callable[..., torch.Tensor],
    seed: int,
    keys: Sequence[bytes],
    indices: Sequence[int] | torch.Tensor,
    shape: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    """``(len(keys), *shape)`` draws; row ``r`` is ``sampler(shape)`` from a generator seeded by
    ``draw_seed(seed, keys[r], indices[r])``, so it depends on nothing else (not on the other rows).

    The Python loop runs over rows (one generator seeding and one draw each), not over elements.

    Args:
        sampler: ``torch.randn`` or ``torch.rand`` (called as ``sampler(shape, generator=, dtype=, device=)``).
        seed: base seed.
        keys: item digest of each row (:func:`item_keys`).
        indices: draw index of each row (e.g. the noise-sample number).
        shape: shape of one row.
        dtype: floating dtype of the draws.
        device: device of the result.

    Returns:
        The stacked draws on ``device``.
    """
    idx = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    if len(idx) != len(keys):
        raise ValueError(f"got {len(keys)} keys and {len(idx)} draw indices.")
    device = torch.device(device)
    if device.type == "meta":  # no values to draw: the shape alone, without a host generator and a copy
        return torch.empty((len(keys), *shape), dtype=dtype, device=device)
    gen = _device_generator(device)
    out = torch.empty((len(keys), *shape), dtype=dtype, device=device)
    for r, (key, i) in enumerate(zip(keys, idx)):
        gen.manual_seed(draw_seed(seed, key, i))
        out[r] = sampler(tuple(shape), generator=gen, dtype=dtype, device=gen.device)
    return out
