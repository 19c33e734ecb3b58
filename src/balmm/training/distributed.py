"""Training over several processes started by ``torchrun`` (torch.distributed).

``torchrun --nproc_per_node=N -m balmm train ...`` starts N copies of the command; each
reads the data and runs the same protocol (preprocessing, cross-fitting, decisions) and
every :class:`~balmm.training.loop.TrainLoop` trains a DistributedDataParallel replica:
each global minibatch (the single-process one, drawn from the same random stream on every
rank) is split over the ranks by torch's ``DistributedSampler``, and DDP averages the
gradients, so the ranks hold identical weights and take identical decisions. Rank 0 alone
writes outputs, checkpoints and logs; the others wait for it at a barrier.

Backend: ``nccl`` on CUDA (one device per local rank), ``gloo`` on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun); readable before
    :func:`init`, so the CLI can decide who writes before any heavy work."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes."""
    info = current()
    return env_rank() == 0 if info is None else info.rank == 0


def current() -> DistInfo | None:
    """The group this process has joined, or None (single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))


def init(device: str) -> DistInfo | None:
    """Join torchrun's process group (once): ``nccl`` when training on CUDA, else ``gloo``.
    On CUDA each local rank takes its own device. None when not launched by torchrun."""
    if not launched():
        return None
    info = current()
    if info is not None:
        return info
    use_cuda = device in ("cuda", "auto") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current()


def barrier() -> None:
    if current() is not None:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module) -> nn.Module:
    """``model`` as a DistributedDataParallel replica (itself in a single process).
    Unused parameters are expected: a modality absent from a minibatch, frozen encoders."""
    info = current()
    if info is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def shard(rows: np.ndarray) -> np.ndarray:
    """This rank's part of a global minibatch ``rows`` (positions into it, padded by
    torch's DistributedSampler so that every rank has the same number of rows)."""
    info = current()
    if info is None:
        return np.arange(len(rows))
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(len(rows)), num_replicas=info.world_size, rank=info.rank, shuffle=False
    )
    return np.fromiter(iter(sampler), dtype=np.int64)


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (a decision taken from a clock must not differ
    between ranks: the others would wait for steps that never come)."""
    info = current()
    if info is None:
        return flag
    device = "cuda" if info.backend == "nccl" else "cpu"
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over the ranks (a copy)."""
    info = current()
    if info is None:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.div_(info.world_size)


def average_grads(params: list[nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of ``params`` over the ranks: those DDP does not
    see (the uncertainty balancer's own weights) or that a balancer rescaled after DDP's
    reduction from rank-local outputs (OGM-GE), so every rank steps identically."""
    info = current()
    if info is None or not params:
        return
    # one all-reduce of every gradient and of a "has a gradient" flag per parameter: a
    # parameter without one anywhere keeps None (as a single process would)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = [torch.ones(1, device=g.device) if p.grad is not None else torch.zeros(1, device=g.device)
           for p, g in zip(params, grads, strict=True)]  # fmt: skip
    flat = torch.cat([*(g.reshape(-1) for g in grads), *has])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(info.world_size)
    flags = flat[-len(params) :].tolist()
    i = 0
    for p, g, f in zip(params, grads, flags, strict=True):
        if f > 0:
            p.grad = flat[i : i + g.numel()].view_as(p).clone()
        i += g.numel()
