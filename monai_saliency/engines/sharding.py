"""Splitting a 1D range of work across ``torch.distributed`` ranks and gathering the parts in rank order."""

from __future__ import annotations

import torch

__all__ = ["gather_shards", "shard_bounds"]


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous range ``[lo, hi)`` of ``n`` items for ``rank`` of ``world`` (sizes differ by at most one).

    Raises:
        ValueError: ``world < 1``, ``rank`` outside ``[0, world)`` or ``n < 0``.
    """
    if world < 1 or not 0 <= rank < world or n < 0:
        raise ValueError(f"need n >= 0, world >= 1 and 0 <= rank < world, got n={n}, rank={rank}, world={world}.")
    base, rem = divmod(n, world)
    lo = rank * base + min(rank, rem)
    return lo, lo + base + (1 if rank < rem else 0)


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """All-gather each rank's 1D shard (``local`` holds the items :func:`shard_bounds` gives this rank) and
    concatenate them in rank order into the full ``(n,)`` tensor, on every rank.

    Shards are padded to one size for ``all_gather``; with the ``nccl`` backend they travel through the current
    CUDA device, the result is on ``local``'s device.

    Raises:
        RuntimeError: no initialised process group.
        ValueError: ``local`` is not 1D of this rank's shard size.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("gather_shards needs an initialised torch.distributed process group.")
    rank, world = dist.get_rank(), dist.get_world_size()
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    lo, hi = bounds[rank]
    if local.ndim != 1 or local.numel() != hi - lo:
        raise ValueError(f"rank {rank} must hold a 1D shard of {hi - lo} items, got shape {tuple(local.shape)}.")
    size = max(h - lo_ for lo_, h in bounds)
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else local.device
    buf = torch.zeros(size, dtype=local.dtype, device=comm)
    buf[: local.numel()] = local.to(comm)
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    return torch.cat([parts[r][: h - lo_] for r, (lo_, h) in enumerate(bounds)]).to(local.device)
