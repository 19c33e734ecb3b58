"""Training over several processes started by ``torchrun`` (torch.distributed).

``torchrun --nproc_per_node=N -m balmm train ...`` starts N copies of the command; each
reads the data and runs the same protocol (preprocessing, cross-fitting, decisions) and
every :class:`~balmm.training.loop.TrainLoop` trains a DistributedDataParallel replica:
each global minibatch (the single-process one, drawn from the same random stream on every
rank) is split over the ranks by torch's ``DistributedSampler``, and DDP averages the
gradients, so the ranks hold identical weights and take identical decisions. Rank 0 alone
writes outputs, checkpoints and logs; the others wait for it at a barrier.

Independent pieces of work (cross-fitting's per-fold epoch curves, ``balmm bench`` units)
are shared out instead (:func:`spread`): each rank runs its share by itself, as one process
would, and every rank receives every result.

Backend: ``nccl`` on CUDA (one device per local rank), ``gloo`` on CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

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


T = TypeVar("T")
R = TypeVar("R")

# inside spread(): this rank works alone (no DDP, no collective), whatever the group
_ALONE = contextvars.ContextVar("balmm_dist_alone", default=False)


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
    """The group this process has joined, or None (single process, or inside
    :func:`alone`)."""
    if _ALONE.get():
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))


def init(device: str) -> DistInfo | None:
    """Join torchrun's process group (once): ``nccl`` when training on CUDA, else ``gloo``.
    On CUDA each local rank takes its own device. None when not launched by torchrun."""
    if not launched() or _ALONE.get():
        return None
    info = current()
    if info is not None:
        return info
    use_cuda = device in ("cuda", "auto") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current()


def init_units(device: str) -> DistInfo | None:
    """Join torchrun's group for work shared out by :func:`spread` only (``balmm bench``):
    ``gloo``, since the ranks exchange results, never tensors of a model; on CUDA each
    local rank trains on its own device. None when not launched by torchrun."""
    if not launched():
        return None
    if device in ("cuda", "auto") and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if current() is None:
        dist.init_process_group(backend="gloo")
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


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside this block the process computes by itself: :func:`current` is None, so a
    :class:`~balmm.training.loop.TrainLoop` is a plain single-process loop (no DDP)."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


def spread(tasks: Sequence[T], run: Callable[[T], R]) -> list[R]:
    """``[run(t) for t in tasks]``, shared out over the ranks under torchrun.

    Rank r runs tasks r, r + W, r + 2W, ... (W ranks) by itself (:func:`alone`), so each
    result is exactly what a single process computes; then every rank receives every
    result, in task order (``all_gather_object``). A task that fails on one rank raises on
    every rank (no rank is left waiting). One process: the tasks in order."""
    info = current()
    if info is None:
        return [run(t) for t in tasks]
    mine: dict[int, R] = {}
    error: Exception | None = None
    with alone():
        for i in range(info.rank, len(tasks), info.world_size):
            try:
                mine[i] = run(tasks[i])
            except Exception as exc:  # noqa: BLE001 - raised on every rank after the gather
                error = exc
                break
    failed = None if error is None else f"rank {info.rank}: {type(error).__name__}: {error}"
    parts: list[tuple[dict[int, R], str | None] | None] = [None] * info.world_size
    # tensors travel in host memory: a CUDA tensor would be unpickled on the device index
    # it had on its own rank, which another rank (or node) may not have
    dist.all_gather_object(parts, ({} if error else _on_host(mine), failed))
    if error is not None:
        raise error
    results: dict[int, R] = {}
    for part in parts:
        assert part is not None
        if part[1] is not None:
            raise RuntimeError(f"a task shared out over the ranks failed ({part[1]})")
        results.update(part[0])
    return [results[i] for i in range(len(tasks))]


def _on_host(obj):
    """``obj`` with every tensor inside dicts, lists and tuples moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _on_host(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_on_host(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_host(v) for v in obj)
    return obj
