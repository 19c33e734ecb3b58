"""Samples as tensors (:class:`Split`) and the forward passes every stage shares."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from balmm.errors import InputError
from balmm.model.fusion import MultiModalNet
from balmm.profiling import mi_estimators
from balmm.training.balancers import FUSED
from balmm.training.metrics import macro_f1


class RowSource:
    """One modality's features of a split, kept off the device: ``src[rows]`` reads those
    rows (of a numpy array or an on-disk :class:`balmm.data.matrix.DiskMatrix`) as a dense
    float32 tensor on the device, one minibatch at a time (pinned host memory on CUDA, so
    the copy can overlap compute)."""

    def __init__(self, matrix: Any, rows: np.ndarray, device: torch.device) -> None:
        self.matrix, self.rows, self.device = matrix, np.asarray(rows, dtype=np.int64), device
        self.shape = (len(self.rows), int(matrix.shape[1]))

    def __len__(self) -> int:
        return len(self.rows)

    def _positions(self, r: Any) -> np.ndarray:
        if isinstance(r, torch.Tensor):
            r = r.cpu().numpy()
        if isinstance(r, slice):
            return self.rows[r]
        r = np.asarray(r)
        return self.rows[np.flatnonzero(r) if r.dtype == bool else r]

    def host_rows(self, r: Any) -> torch.Tensor:
        """The rows ``r`` as a float32 tensor in host memory (the prefetching loader reads
        them in a background thread: balmm.training.prefetch)."""
        return torch.from_numpy(np.ascontiguousarray(self.matrix[self._positions(r)]))

    def __getitem__(self, r: Any) -> torch.Tensor:
        host = self.host_rows(r)
        if self.device.type == "cuda":
            return host.pin_memory().to(self.device, non_blocking=True)
        return host.to(self.device)

    def take(self, r: Any) -> RowSource:
        """The rows ``r`` as a new source (nothing read)."""
        return RowSource(self.matrix, self._positions(r), self.device)

    def dense(self) -> torch.Tensor:
        """Every row as one tensor (small splits only)."""
        return self[slice(None)]


Features = torch.Tensor | RowSource


def _take_rows(x: Features, r: torch.Tensor) -> Features:
    return x.take(r) if isinstance(x, RowSource) else x[r]


def _dense(x: Features) -> torch.Tensor:
    return x.dense() if isinstance(x, RowSource) else x


@dataclass
class Split:
    """One set of samples: features (tensors, or row sources read a batch at a time) and
    presence per modality, labels."""

    ids: pd.Index
    X: dict[str, Features]
    M: dict[str, torch.Tensor]
    y: torch.Tensor
    adj: torch.Tensor | None = None  # gcn: adjacency over [graph nodes]; see graph_rows
    graph_rows: torch.Tensor | None = None  # gcn: rows of the graph holding these samples
    gX: dict[str, torch.Tensor] | None = None  # gcn: node features of the whole graph
    gM: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def _rows_of(x: Any, idx: np.ndarray, device: torch.device) -> Features:
    if not isinstance(x, np.ndarray):  # on disk: read a batch at a time
        return RowSource(x, idx, device)
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        # a range of rows: a view, and on CPU a tensor sharing its memory (no copy)
        return torch.as_tensor(x[idx[0] : idx[0] + len(idx)], device=device)
    return torch.as_tensor(np.ascontiguousarray(x[idx]), device=device)


@contextmanager
def feature_store(data) -> Iterator[str | None]:
    """A scratch folder (under ``$TMPDIR``) for the preprocessed features when a modality
    of ``data`` is on disk (``--backed``): they are written there and read a batch at a
    time; None (features in memory) otherwise. Removed on exit."""
    if not any(a.isbacked for a in data.mods.values()):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="balmm-features-") as folder:
        yield folder


def split_from(processed, idx: np.ndarray, device: torch.device) -> Split:
    """The rows ``idx`` of preprocessed data as a :class:`Split` on ``device``."""
    ids = processed.ids[idx]
    X = {m: _rows_of(x, idx, device) for m, x in processed.X.items()}
    M = {m: torch.as_tensor(mk[idx], device=device) for m, mk in processed.mask.items()}
    y = torch.as_tensor(processed.y[idx], device=device)
    return Split(ids, X, M, y)


def single(s: Split, m: str) -> Split:
    """A view of ``s`` restricted to modality ``m``."""
    return Split(
        s.ids, {m: s.X[m]}, {m: s.M[m]}, s.y, s.adj, s.graph_rows,
        None if s.gX is None else {m: s.gX[m]}, None if s.gM is None else {m: s.gM[m]},
    )  # fmt: skip


def restrict(s: Split, m: str) -> Split:
    """Only the samples that have modality ``m`` (mlp); the whole graph for gcn."""
    if s.adj is not None or bool(s.M[m].all()):
        return single(s, m)  # every sample has it: no copy of its features
    keep = s.M[m].nonzero().squeeze(1)
    return Split(s.ids[keep.cpu().numpy()], {m: _take_rows(s.X[m], keep)}, {m: s.M[m][keep]},
                 s.y[keep])  # fmt: skip


def held_with(s: Split, m: str) -> Split:
    """The samples of ``s`` that have modality ``m``, to be scored (a held-out curve): as
    :func:`restrict`, but on a graph (gcn) the whole graph is kept for the forward pass and
    only those samples' rows are read out."""
    if s.adj is None:
        return restrict(s, m)
    assert s.graph_rows is not None and s.gX is not None and s.gM is not None
    keep = s.M[m].nonzero().squeeze(1)
    return Split(s.ids[keep.cpu().numpy()], {m: _take_rows(s.X[m], keep)}, {m: s.M[m][keep]},
                 s.y[keep], s.adj, s.graph_rows[keep], {m: s.gX[m]}, {m: s.gM[m]})  # fmt: skip


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a CUDA device is an error."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available")
    return mi_estimators.resolve_device(device)


def forward(
    model: MultiModalNet,
    s: Split,
    rows: torch.Tensor | None = None,
    masks=None,
    feats: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Model outputs for the samples of ``s`` (``rows``: a subset of them, mlp only; a
    gcn split always runs on its whole graph). ``feats``: features of ``rows`` already
    read for some modalities (a prefetched minibatch)."""
    if s.adj is not None:  # gcn: run on the whole graph, keep this split's rows
        gm = s.gM if masks is None else masks
        return _take(model(s.gX, gm, s.adj), s.graph_rows)
    if rows is None:
        return model({m: _dense(x) for m, x in s.X.items()}, s.M if masks is None else masks)
    feats = feats or {}
    xs = {m: feats[m] if m in feats else x[rows] for m, x in s.X.items()}
    ms = {m: mk[rows] for m, mk in s.M.items()} if masks is None else masks
    return model(xs, ms)


def _take(out: dict, sel: torch.Tensor) -> dict:
    return {
        "z": {m: z[sel] for m, z in out["z"].items()},
        "logits": {m: v[sel] for m, v in out["logits"].items()},
        "fused": out["fused"][sel],
    }


@torch.no_grad()
def infer(
    model: MultiModalNet, s: Split, batch: int = 8192, masks=None, embeddings: bool = True
) -> dict[str, np.ndarray]:
    """Class probabilities of every head and (``embeddings``) the embeddings, in eval mode,
    a batch of rows at a time; ``masks``: presence masks to use instead of ``s.M``."""
    model.eval()
    stack = getattr(model, "stack", None)
    if stack is not None and stack.source is not None:  # stack_missing = "pattern"
        from balmm.training.stack_patterns import prepare

        prepare(stack, masks if masks is not None else s.gM if s.adj is not None else s.M)
    if s.adj is not None or len(s) <= batch:
        batches: list[torch.Tensor | None] = [None]
    else:
        batches = [torch.arange(i, min(i + batch, len(s)), device=s.y.device)
                   for i in range(0, len(s), batch)]  # fmt: skip
    parts: dict[str, list[np.ndarray]] = {}
    for rows in batches:
        if masks is None or rows is None:
            o = forward(model, s, rows, masks=masks)
        else:
            o = forward(model, s, rows, masks={m: mk[rows] for m, mk in masks.items()})
        # each batch's outputs to the host at once: only what is kept stays in memory
        parts.setdefault(FUSED, []).append(torch.softmax(o["fused"], 1).cpu().numpy())
        for m, v in o["logits"].items():
            parts.setdefault(m, []).append(torch.softmax(v, 1).cpu().numpy())
        if embeddings:
            for m, v in o["z"].items():
                parts.setdefault(f"z:{m}", []).append(v.cpu().numpy())
    return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}


@torch.no_grad()
def unimodal_logits(net: MultiModalNet, m: str, s: Split, batch: int = 8192) -> torch.Tensor:
    """Logits of modality ``m``'s head over the samples of ``s`` (eval mode)."""
    net.eval()
    one = single(s, m)
    if s.adj is not None or len(s) <= batch:
        return forward(net, one)["logits"][m]
    # in batches: a large split's features may be on disk (--backed), never read whole
    dev = s.y.device
    return torch.cat([forward(net, one, torch.arange(i, min(i + batch, len(s)), device=dev))
                      ["logits"][m] for i in range(0, len(s), batch)])  # fmt: skip


def head_f1(proba: dict[str, np.ndarray], s: Split, n_classes: int) -> dict[str, float]:
    """Validation macro-F1 of every head (a modality head over the samples that have it)."""
    y = s.y.cpu().numpy()
    out = {FUSED: macro_f1(y, proba[FUSED].argmax(1), n_classes)}
    for m in s.M:
        if m in proba:
            mk = s.M[m].cpu().numpy() & (y >= 0)
            out[m] = macro_f1(y[mk], proba[m][mk].argmax(1), n_classes)
    return out


def mean_log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of ``proba`` over the labelled rows (y >= 0); NaN if none."""
    keep = y >= 0
    if not keep.any():
        return float("nan")
    return float(-np.log(np.clip(proba[keep, y[keep]], 1e-12, 1)).mean())
