"""A prefetching loader for minibatches read from the host or from disk.

Features kept off the device (:class:`~balmm.training.tensors.RowSource`: ``--backed``
features on disk, or host rows for a GPU) are read one minibatch at a time. While the
current minibatch trains, a background thread reads the next one (file reads and numpy
gathers release the GIL), into pinned memory when the device is CUDA, so its copy to the
device does not block the host. Same rows in the same order as reading each batch when it
is needed: the model is bit for bit the same with the loader on or off.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from balmm.training.tensors import Features, RowSource


def _read(sources: dict[str, RowSource], rows: np.ndarray, pin: bool) -> dict[str, torch.Tensor]:
    out = {}
    for m, src in sources.items():
        host = src.host_rows(rows)
        out[m] = host.pin_memory() if pin else host
    return out


def prefetched(
    X: dict[str, Features], batches: Sequence[np.ndarray], device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """For each minibatch of ``batches`` (row positions), the features of the modalities of
    ``X`` that are row sources, on ``device``; the next batch is read in the background
    while the caller trains on this one. Modalities already on the device are left out
    (the caller indexes them as before)."""
    sources = {m: x for m, x in X.items() if isinstance(x, RowSource)}
    if not sources or not len(batches):
        yield from ({} for _ in batches)
        return
    cuda = device.type == "cuda"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="balmm-prefetch") as pool:
        nxt: Future = pool.submit(_read, sources, batches[0], cuda)
        for i in range(len(batches)):
            host = nxt.result()
            if i + 1 < len(batches):
                nxt = pool.submit(_read, sources, batches[i + 1], cuda)
            yield {m: t.to(device, non_blocking=cuda) for m, t in host.items()}
