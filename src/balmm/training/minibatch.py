"""Minibatches and random streams: the shuffled row order of an epoch, each part of
training's own seeded streams, and modality dropout's masks."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import numpy as np
import torch


def random_streams(seed: int, *scope: str) -> tuple[np.random.Generator, torch.Generator]:
    """Random streams for one part of training (a stage, a modality), seeded from
    ``(seed, *scope)`` alone; torch's global generator (initialisation, dropout) is
    reseeded too. So a modality's training never depends on which other modalities are
    present or in which order, and an assay left out of the fusion cannot change the
    fused model through the random numbers it would otherwise consume."""
    words = [zlib.crc32(part.encode()) for part in scope]
    state = np.random.SeedSequence([seed % 2**63, *words]).generate_state(3, dtype=np.uint64)
    torch.manual_seed(int(state[0]))
    return np.random.default_rng(int(state[1])), torch.Generator().manual_seed(int(state[2]))


def batches(n: int, batch_size: int, rng: np.random.Generator, graph: bool) -> list[np.ndarray]:
    """Shuffled minibatches of ``range(n)`` (the whole graph at once for gcn)."""
    if graph:
        return [np.arange(n)]
    perm = rng.permutation(n)
    # drop a last batch of one sample: norm layers and BatchNorm need more than one row
    out = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out[-2] = np.concatenate([out[-2], out[-1]])
        out.pop()
    return out


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; to CUDA through pinned memory without blocking, so the
    host does not wait for the device's queue at every step."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def drop_modalities(
    masks: dict[str, torch.Tensor], p: float, gen: torch.Generator, skip: set[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """Randomly hide present modalities (each with probability p), keeping >= 1 per sample,
    so the fusion head learns to predict from any subset (e.g. BRCA test lacks protein).
    Modalities in ``skip`` (left out of the fusion) are neither dropped nor drawn for."""
    names = [m for m in masks if m not in skip]
    if p <= 0 or len(names) < 2:
        return masks
    present = torch.stack([masks[m] for m in names], 1)
    drop = to_device(torch.rand(present.shape, generator=gen), present.device) < p
    kept = present & ~drop
    empty = kept.sum(1) == 0
    # where(), not kept[empty] = ...: boolean-mask indexing waits for the device (CUDA)
    kept = torch.where(empty.unsqueeze(1), present, kept)
    return {**masks, **{m: kept[:, i] for i, m in enumerate(names)}}


@contextlib.contextmanager
def global_stream(gen: torch.Generator) -> Iterator[None]:
    """Run with torch's global CPU generator in ``gen``'s state (a module's dropout draws
    from it), then keep where it got to in ``gen``."""
    torch.set_rng_state(gen.get_state())
    try:
        yield
    finally:
        gen.set_state(torch.get_rng_state())
