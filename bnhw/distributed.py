"""Multi-process helpers: ``torchrun`` sets the environment, bnhw reads it.

Gloo on CPUs, NCCL on GPUs.  With one process (no ``torchrun``) every helper
is a no-op, so the same code runs everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")


def init_from_env() -> bool:
    """Initialise the process group if launched by ``torchrun``; returns whether distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return dist.get_world_size() > 1


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def wrap_ddp(module: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    # subnets leave parts of the supernet unused at every step
    return DistributedDataParallel(module, find_unused_parameters=True)


def mean_over_ranks(t: Tensor) -> Tensor:
    if not is_dist():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / world_size()


def split_for_rank(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (round robin)."""
    return list(items[rank()::world_size()])


def gather_in_order(local: list[float], n: int) -> list[float]:
    """Inverse of :func:`split_for_rank` for float results: every rank gets all ``n`` values in order."""
    if not is_dist():
        return list(local)
    w = world_size()
    per = -(-n // w)
    mine = torch.zeros(per, dtype=torch.float64)
    mine[:len(local)] = torch.tensor(local, dtype=torch.float64)
    parts = [torch.zeros(per, dtype=torch.float64) for _ in range(w)]
    dist.all_gather(parts, mine)
    out: list[float] = [0.0] * n
    for r in range(w):
        for j, i in enumerate(range(r, n, w)):
            out[i] = float(parts[r][j])
    return out
