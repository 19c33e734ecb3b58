"""Per-modality encoders: ``linear`` (default) and ``mlp`` (minibatch), ``gcn`` (graph).

Each maps one modality's feature matrix to an embedding of width ``embed_dim``.
The ``gcn`` encoder takes the rows of every node of a sample graph plus the
graph's row-normalised sparse adjacency (see :mod:`balmm.model.graph`).
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return nn.Identity()


def _act(kind: str) -> nn.Module:
    return {"gelu": nn.GELU, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}[kind]()


class _FeedForwardEncoder(nn.Module):
    """An encoder that maps each sample on its own through ``self.net`` (no graph)."""

    net: nn.Sequential

    def forward(self, x: torch.Tensor, adj: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class MLPEncoder(_FeedForwardEncoder):
    """Two blocks of Linear -> norm -> activation -> dropout (input dropout first)."""

    def __init__(
        self,
        n_in: int,
        hidden: int = 128,
        embed_dim: int = 64,
        norm: str = "layer",
        activation: str = "gelu",
        dropout: float = 0.5,
        input_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_in, self.embed_dim = n_in, embed_dim
        self.net = nn.Sequential(
            nn.Dropout(input_dropout),
            nn.Linear(n_in, hidden),
            _norm(norm, hidden),
            _act(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, embed_dim),
            _norm(norm, embed_dim),
            _act(activation),
            nn.Dropout(dropout),
        )


class GCNEncoder(nn.Module):
    """Two graph-convolution blocks: ``H' = act(norm(A @ H @ W))`` with a sparse ``A``.

    ``A`` is row-normalised with self-loops, so a node's embedding mixes its own
    features with its neighbours' (Kipf & Welling 2017; MOGONET's per-omics GCN,
    here over one SNF-fused graph shared by all modalities).
    """

    def __init__(
        self,
        n_in: int,
        hidden: int = 128,
        embed_dim: int = 64,
        norm: str = "layer",
        activation: str = "gelu",
        dropout: float = 0.5,
        input_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_in, self.embed_dim = n_in, embed_dim
        self.in_drop = nn.Dropout(input_dropout)
        self.lin1 = nn.Linear(n_in, hidden)
        self.norm1 = _norm(norm, hidden)
        self.lin2 = nn.Linear(hidden, embed_dim)
        self.norm2 = _norm(norm, embed_dim)
        self.act = _act(activation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, adj: torch.Tensor | None = None) -> torch.Tensor:
        if adj is None:
            raise ValueError("the gcn encoder needs the sample graph (adj)")
        h = self.lin1(self.in_drop(x))
        h = self.drop(self.act(self.norm1(torch.sparse.mm(adj, h))))
        h = self.lin2(h)
        return self.drop(self.act(self.norm2(torch.sparse.mm(adj, h))))


class LinearEncoder(_FeedForwardEncoder):
    """One linear map to the embedding, with input dropout and dropout on the embedding.

    The low-capacity choice for omics cohorts of a few hundred samples, where the two-block
    MLP overfits the fit split (docs/method.md, "Linear encoders"). ``hidden``, ``norm`` and
    ``activation`` are accepted so that every encoder takes the same keyword arguments.
    """

    def __init__(
        self,
        n_in: int,
        hidden: int = 128,
        embed_dim: int = 64,
        norm: str = "layer",
        activation: str = "gelu",
        dropout: float = 0.5,
        input_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_in, self.embed_dim = n_in, embed_dim
        self.net = nn.Sequential(
            nn.Dropout(input_dropout), nn.Linear(n_in, embed_dim), nn.Dropout(dropout)
        )


def make_encoder(kind: str, n_in: int, **kwargs) -> nn.Module:
    """An encoder by name (``linear``, ``mlp`` or ``gcn``)."""
    if kind == "linear":
        return LinearEncoder(n_in, **kwargs)
    if kind == "mlp":
        return MLPEncoder(n_in, **kwargs)
    if kind == "gcn":
        return GCNEncoder(n_in, **kwargs)
    raise ValueError(f"unknown encoder {kind!r}")
