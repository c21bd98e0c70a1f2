"""Which process this is under ``accelerate launch``/torchrun, and work shared out over processes.

A single process (no ``torch.distributed`` group) is rank 0 of 1: everything here is then a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def world() -> tuple[int, int]:
    """(rank, world size)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def gather_sharded(items: Sequence, fn: Callable[[list], list]) -> list:
    """``fn`` on this process's share of ``items`` (every ``size``-th item from ``rank``); every process
    gets all results, in the order of ``items``."""
    rank, size = world()
    mine = fn(list(items[rank::size]))
    if size == 1:
        return mine
    parts: list = [None] * size
    torch.distributed.all_gather_object(parts, mine)
    out: list = [None] * len(items)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out
