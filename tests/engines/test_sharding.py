from __future__ import annotations

import itertools
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_saliency.engines.sharding import gather_shards, shard_bounds


@pytest.mark.parametrize(("n", "world"), [(0, 1), (7, 3), (10, 4), (2, 5)])
def test_shard_bounds_tile_the_range(n, world):
    b = [shard_bounds(n, r, world) for r in range(world)]
    assert b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in itertools.pairwise(b))
    sizes = [hi - lo for lo, hi in b]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        shard_bounds(n, world, world)


def _worker(rank: int, world: int, port: int, n: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        lo, hi = shard_bounds(n, rank, world)
        queue.put((rank, gather_shards(torch.arange(lo, hi, dtype=torch.float64) * 2, n).tolist()))
    finally:
        dist.destroy_process_group()


def test_gather_shards_concatenates_in_rank_order():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    world, n = 3, 8  # uneven shards: 3, 3, 2
    mp.start_processes(_worker, args=(world, port, n, queue), nprocs=world, start_method="spawn")
    results = dict(queue.get(timeout=60) for _ in range(world))
    for r in range(world):
        assert results[r] == [2.0 * i for i in range(n)]


def test_gather_shards_needs_a_process_group():
    with pytest.raises(RuntimeError, match="process group"):
        gather_shards(torch.zeros(2), 2)
