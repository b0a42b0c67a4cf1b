"""torch.distributed under torchrun: one process per device, rank 0 the only writer of the run.

A process is distributed only when torchrun launched it (RANK, WORLD_SIZE and LOCAL_RANK in the
environment) and `setup` was called; everything else (plain runs, tests, the app) sees a world of
one, and every helper here degrades to the single-process behaviour without touching
torch.distributed. Backend: NCCL when the rank's device is CUDA (device cuda:LOCAL_RANK), gloo on
CPU. Work is split by `shard` (largest items first onto the least-loaded rank), results come back
with `gather_to_main`/`all_gather`, and only `is_main()` writes run outputs, atomically, so a rank
that dies leaves the run folder as it was; torchrun then stops the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import torch

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT = timedelta(hours=6)  # rank 0 may work alone (e.g. a transfer step) while the others wait


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among world_size, and the backend (None when single)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.backend is not None and self.world_size > 1

    def describe(self, split: str) -> dict:
        """What a report records so a reader can tell how the work was split."""
        return {"world_size": self.world_size, "backend": self.backend, "split": split}


_context = Context()


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) set this process's rank environment."""
    return all(k in os.environ for k in ENV)


def context() -> Context:
    return _context


def local_device(requested: str = "auto") -> str:
    """This rank's device: cuda:LOCAL_RANK when CUDA is asked for (or auto and present), else cpu."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested in (None, "auto"):
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if str(requested).startswith("cuda"):
        return f"cuda:{local_rank}"
    return str(requested)


def setup(requested_device: str = "auto") -> tuple[Context, str]:
    """Join torchrun's process group (once); returns the context and this rank's device string.

    Without torchrun's environment nothing is initialised and the requested device is returned as is.
    """
    global _context
    if not launched():
        return _context, requested_device
    import torch.distributed as dist

    device = local_device(requested_device)
    if dist.is_initialized():
        return _context, device
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    _context = Context(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]), backend)
    return _context, device


def teardown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    global _context
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.destroy_process_group()
    finally:
        _context = Context()


def is_main() -> bool:
    return _context.rank == 0


def barrier() -> None:
    if _context.active:
        import torch.distributed as dist

        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (picklable objects; numpy arrays included)."""
    if not _context.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * _context.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's `obj` in rank order on rank 0; None on the other ranks."""
    if not _context.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * _context.world_size if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not _context.active:
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(costs: Sequence[float], world_size: int) -> list[list[int]]:
    """Indices of `costs` split over `world_size` ranks, balanced: costliest first onto the least-loaded
    rank (ties by index, so every rank computes the same split). Each rank's list is in index order."""
    load = [0.0] * world_size
    parts: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        parts[r].append(i)
        load[r] += float(costs[i])
    return [sorted(p) for p in parts]


def my_share(costs: Sequence[float]) -> list[int]:
    """This rank's indices of `shard(costs, world_size)` (all of them in a single process)."""
    return shard(costs, _context.world_size)[_context.rank]
