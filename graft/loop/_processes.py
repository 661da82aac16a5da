"""Seeds and torch.distributed: who selects what, with which random stream."""

from __future__ import annotations

import zlib

import torch

from graft._checks import check_count


def seeded_generator(seed, epoch, stream):
    """A torch generator for one purpose of one epoch (exact on resume).

    ``zlib.crc32`` rather than ``hash``: string hashes change between
    processes, and a resumed run must draw the same numbers.
    """
    return torch.Generator().manual_seed(
        zlib.crc32(f"{seed}:{epoch}:{stream}".encode())
    )


def resolve_processes(process_rank, world_size):
    """``(process_rank, world_size)``: given, from ``torch.distributed``, or (0, 1)."""
    dist = torch.distributed
    ready = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if ready else 1
    if process_rank is None:
        process_rank = dist.get_rank() if ready else 0
    process_rank = check_count("process_rank", process_rank, 0)
    world_size = check_count("world_size", world_size, 1)
    if process_rank >= world_size:
        raise ValueError(
            f"process_rank ({process_rank}) and world_size ({world_size}) must "
            "satisfy 0 <= process_rank < world_size; pass None for both to take "
            "them from torch.distributed."
        )
    if world_size > 1 and not ready:
        raise ValueError(
            f"world_size ({world_size}) > 1 needs torch.distributed: call "
            "torch.distributed.init_process_group first, or pass world_size=None."
        )
    return process_rank, world_size


def process_batches(order, batch_size, process_rank, world_size, drop_last=False):
    """The batches (lists of dataset indices) of ``order`` for one process.

    Global batches of ``batch_size * world_size`` consecutive entries are
    dealt to the processes round-robin, so the processes' shards are disjoint and
    every process gets the same number of batches (DDP needs that). A last
    global batch with fewer entries than ranks joins the previous one, so
    no rank gets an empty batch; with ``drop_last`` an incomplete last
    global batch is dropped. With one process: plain consecutive batches.
    """
    n = len(order)
    if n < world_size:
        raise ValueError(
            f"{n} samples cannot be shared by world_size={world_size} processes; "
            "use more data or fewer processes."
        )
    step = batch_size * world_size
    bounds = [*range(0, n, step), n]
    if drop_last and len(bounds) > 2 and n - bounds[-2] < step:
        del bounds[-1]
    elif len(bounds) > 2 and n - bounds[-2] < world_size:
        del bounds[-2]
    return [
        order[bounds[k] : bounds[k + 1]][process_rank::world_size].tolist()
        for k in range(len(bounds) - 1)
    ]


def all_gather(obj, world_size):
    """``[obj of process 0, obj of process 1, ...]`` (just ``[obj]`` on one process)."""
    if world_size == 1:
        return [obj]
    out = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def select_stream(process_rank):
    """The generator stream of a process's selections (one process: as before)."""
    return "select" if process_rank == 0 else f"select:{process_rank}"


def unwrap(model):
    """The module a ``DistributedDataParallel`` wraps (selection needs no sync)."""
    ddp = torch.nn.parallel.DistributedDataParallel
    return model.module if isinstance(model, ddp) else model
