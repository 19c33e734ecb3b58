"""Sparse patient-similarity graphs for the ``gcn`` encoder.

Per modality a k-nearest-neighbour graph with the scaled exponential kernel of
Similarity Network Fusion (Wang et al. 2014),

    W(i, j) = exp(-rho(i, j)^2 / (mu * eps_ij)),
    eps_ij = (mean kNN distance of i + mean kNN distance of j + rho(i, j)) / 3,

then SNF's cross-diffusion ``P_v <- S_v (mean_{u != v} P_u) S_v^T`` for T
iterations. Everything stays sparse: each diffusion product is pruned back to
the K' = 2K strongest entries per row, so memory is O(n K) instead of O(n^2)
(a sparse approximation of SNF; with K' >= n it is exact on the kNN-masked P).

**Inductive** (default): the graph used for training holds the fit samples only;
a validation, test or new sample is attached by edges to its K nearest
*training* samples (per modality, with the training samples' kernel
bandwidths), and training nodes never receive edges from it, so their
embeddings do not depend on test samples. **Transductive** (MOGONET-style):
one graph over every sample's features (never labels); reports say so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.neighbors import NearestNeighbors

from balmm.errors import InputError

# gcn trains full-batch: every epoch runs the whole graph (all samples' features on the
# device) and the graph needs an exact kNN search, O(n^2) distances; above this many samples
# the mlp encoder, which trains on minibatches, is the one to use
GCN_MAX_SAMPLES = 50_000


def check_graph_size(n_samples: int) -> None:
    """Refuse a gcn run over more than :data:`GCN_MAX_SAMPLES` samples, saying why."""
    if n_samples > GCN_MAX_SAMPLES:
        raise InputError(
            f"--encoder gcn: {n_samples:,} samples is above its limit of {GCN_MAX_SAMPLES:,} "
            "(it trains full-batch on one graph over every sample, built by an exact kNN "
            "search); use --encoder mlp, which trains on minibatches"
        )


def _knn(ref: np.ndarray, query: np.ndarray, k: int, same: bool):
    k_eff = min(k + (1 if same else 0), len(ref))
    nn = NearestNeighbors(n_neighbors=k_eff).fit(ref)
    dist, ind = nn.kneighbors(query)
    if same:  # drop self
        dist, ind = dist[:, 1:], ind[:, 1:]
    return dist, ind


def _kernel(dist: np.ndarray, eps_q: np.ndarray, eps_r: np.ndarray, ind: np.ndarray, mu: float):
    eps = (eps_q[:, None] + eps_r[ind] + dist) / 3.0
    return np.exp(-(dist**2) / (mu * np.maximum(eps, 1e-12)))


def _row_topk(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of every row, vectorised: the rows holding more than k
    entries are padded into one dense block and partitioned together."""
    m = m.tocsr()
    counts = np.diff(m.indptr)
    long = np.flatnonzero(counts > k)
    if len(long) == 0:
        return m
    width = int(counts[long].max())
    keep = np.ones(m.nnz, dtype=bool)
    # blocks of rows bound the padded copy (rows x widest row)
    step = max(1, (1 << 24) // width)
    for start in range(0, len(long), step):
        rows = long[start : start + step]
        n_in = counts[rows]
        owner = np.repeat(np.arange(len(rows)), n_in)  # block row of each entry
        within = np.arange(len(owner)) - np.repeat(np.cumsum(n_in) - n_in, n_in)
        flat = m.indptr[rows][owner] + within  # the entries' positions in m.data
        pad = np.full((len(rows), width), np.inf)
        pad[owner, within] = -m.data[flat]
        top = np.argpartition(pad, k - 1, axis=1)[:, :k]
        keep[flat] = False
        keep[(m.indptr[rows][:, None] + top).ravel()] = True
    indptr = np.concatenate([[0], np.cumsum(np.minimum(counts, k))])
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def _row_normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    s = np.asarray(m.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.where(s > 0, s, 1.0)) @ m


def modality_knn(x: np.ndarray, has: np.ndarray, k: int, mu: float):
    """Sparse kernel W (n x n, zero rows where the modality is missing) and the mean kNN
    distance of every sample that has the modality (its bandwidth, NaN elsewhere)."""
    n = len(x)
    rows = np.flatnonzero(has)
    eps = np.full(n, np.nan)
    if len(rows) < 2:
        return sp.csr_matrix((n, n)), eps
    dist, ind = _knn(x[rows], x[rows], k, same=True)
    e = dist.mean(axis=1)
    eps[rows] = e
    w = _kernel(dist, e, e, ind, mu)
    mat = sp.csr_matrix((w.ravel(), (np.repeat(rows, ind.shape[1]), rows[ind].ravel())), (n, n))
    return (mat + mat.T) / 2, eps


def snf(kernels: list[sp.csr_matrix], k: int, iterations: int) -> sp.csr_matrix:
    """Sparse Similarity Network Fusion of per-modality kernels (n x n each)."""
    n = kernels[0].shape[0]
    eye = sp.identity(n, format="csr")
    # P: kernel with half the mass on the diagonal (SNF's normalisation); S: kNN-local
    P = [(0.5 * _row_normalise(w) + 0.5 * eye).tocsr() for w in kernels]
    S = [_row_normalise(_row_topk(w, k) + eye * 1e-12).tocsr() for w in kernels]
    if len(kernels) > 1:
        for _ in range(iterations):
            new = []
            for v in range(len(P)):
                others = sum(P[u] for u in range(len(P)) if u != v) / (len(P) - 1)
                pv = _row_topk((S[v] @ others @ S[v].T).tocsr(), 2 * k)
                new.append((0.5 * _row_normalise(pv) + 0.5 * eye).tocsr())
            P = new
    fused = sum(P) / len(P)
    fused = fused - sp.diags(fused.diagonal())
    fused = _row_topk(((fused + fused.T) / 2).tocsr(), k)
    return ((fused + fused.T) / 2).tocsr()


def fused_graph(X: dict[str, np.ndarray], mask: dict[str, np.ndarray], k: int, t: int,
                mu: float) -> tuple[sp.csr_matrix, dict[str, np.ndarray]]:  # fmt: skip
    """SNF graph over the given samples, and each modality's per-sample bandwidth."""
    kernels, eps = [], {}
    for m in X:
        w, e = modality_knn(X[m], mask[m], k, mu)
        kernels.append(w)
        eps[m] = e
    return snf(kernels, k, t), eps


def attach(
    X_ref: dict[str, np.ndarray], mask_ref: dict[str, np.ndarray], eps_ref: dict[str, np.ndarray],
    X_new: dict[str, np.ndarray], mask_new: dict[str, np.ndarray], k: int, mu: float,
) -> sp.csr_matrix:  # fmt: skip
    """Edges from new samples to their K nearest reference (training) samples, fused over
    the modalities each new sample has (mean of row-normalised kernels): n_new x n_ref."""
    n_new = len(next(iter(X_new.values())))
    n_ref = len(next(iter(X_ref.values())))
    acc = sp.csr_matrix((n_new, n_ref))
    count = np.zeros(n_new)
    for m in X_new:
        ref_rows = np.flatnonzero(mask_ref[m])
        new_rows = np.flatnonzero(mask_new[m])
        if len(ref_rows) < 1 or len(new_rows) == 0:
            continue
        dist, ind = _knn(X_ref[m][ref_rows], X_new[m][new_rows], k, same=False)
        e_new = dist.mean(axis=1)
        w = _kernel(dist, e_new, eps_ref[m][ref_rows], ind, mu)
        mat = sp.csr_matrix(
            (w.ravel(), (np.repeat(new_rows, ind.shape[1]), ref_rows[ind].ravel())),
            (n_new, n_ref),
        )
        acc = acc + _row_normalise(mat)
        count[new_rows] += 1
    return sp.diags(1.0 / np.maximum(count, 1)) @ acc


def gcn_adjacency(w: sp.csr_matrix) -> sp.csr_matrix:
    """Row-normalised adjacency with self-loops (each node keeps half its own features)."""
    n = w.shape[0]
    return (0.5 * _row_normalise(w) + 0.5 * sp.identity(n)).tocsr()


def inductive_adjacency(adj_ref: sp.csr_matrix, w_new: sp.csr_matrix) -> sp.csr_matrix:
    """[[A_ref, 0], [A_new->ref, self]]: reference rows unchanged, new rows attach to ref."""
    n_new = w_new.shape[0]
    new_rows = sp.hstack([0.5 * _row_normalise(w_new), 0.5 * sp.identity(n_new)])
    # a new sample without any neighbour keeps only itself
    lone = np.asarray(w_new.sum(axis=1)).ravel() == 0
    if lone.any():
        fix = sp.diags(np.where(lone, 2.0, 1.0))
        new_rows = fix @ new_rows
    top = sp.hstack([adj_ref, sp.csr_matrix((adj_ref.shape[0], n_new))])
    return sp.vstack([top, new_rows]).tocsr()


def to_torch(adj: sp.csr_matrix, device) -> torch.Tensor:
    coo = adj.tocoo()
    idx = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
    val = torch.as_tensor(coo.data, dtype=torch.float32)
    return (
        torch.sparse_coo_tensor(idx, val, coo.shape, check_invariants=False).coalesce().to(device)
    )


def _node_tensors(X, M, rows: np.ndarray, device) -> tuple[dict, dict]:
    return (
        {m: torch.as_tensor(X[m][rows], device=device) for m in X},
        {m: torch.as_tensor(M[m][rows], device=device) for m in M},
    )


def inductive_graphs(
    X, M, ref_rows: np.ndarray, ref_split, new: list[tuple[Any, np.ndarray]], k: int, t: int,
    mu: float, device,
) -> tuple[sp.csr_matrix, dict[str, np.ndarray], sp.csr_matrix]:  # fmt: skip
    """The SNF graph over the samples ``ref_rows`` (positions in ``X`` and ``M``, per
    modality features and presence) given to ``ref_split`` (when not None), and to each
    ``(split, rows)`` of ``new`` that graph with its own samples attached inductively: they
    take edges to the reference samples and give none, so they never shape it. A split
    gets ``adj``, ``gX``, ``gM`` and ``graph_rows`` (duck-typed: model/ knows no Split).
    Returns the kernel graph, each modality's bandwidths and the reference adjacency."""
    X_ref = {m: X[m][ref_rows] for m in X}
    M_ref = {m: M[m][ref_rows] for m in M}
    w, eps = fused_graph(X_ref, M_ref, k, t, mu)
    a_ref = gcn_adjacency(w)
    n_ref = len(ref_rows)
    for s, rows in new:
        x_new = {m: X[m][rows] for m in X}
        m_new = {m: M[m][rows] for m in M}
        w_new = attach(X_ref, M_ref, eps, x_new, m_new, k, mu)
        both = np.concatenate([ref_rows, rows])
        s.gX, s.gM = _node_tensors(X, M, both, device)
        s.adj = to_torch(inductive_adjacency(a_ref, w_new), device)
        s.graph_rows = torch.arange(n_ref, len(both), device=device)
    if ref_split is not None:
        if new:  # the reference nodes lead every attached graph: share, not copy, them
            gX, gM = new[0][0].gX, new[0][0].gM
            ref_split.gX = {m: x[:n_ref] for m, x in gX.items()}
            ref_split.gM = {m: x[:n_ref] for m, x in gM.items()}
        else:
            ref_split.gX, ref_split.gM = _node_tensors(X, M, ref_rows, device)
        ref_split.adj = to_torch(a_ref, device)
        ref_split.graph_rows = torch.arange(n_ref, device=device)
    return w, eps, a_ref


def attach_graphs(
    proc, idx_fit, idx_val, idx_test, sets, cfg, device
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Give every split of ``sets`` its graph (inductive or transductive). Returns the
    graph's description for metrics.json and the state a bundle needs (the training
    nodes' features, masks and bandwidths; the training graph when inductive)."""
    X, M = proc.X, proc.mask
    X_fit = {m: X[m][idx_fit] for m in X}
    M_fit = {m: M[m][idx_fit] for m in M}
    k, t, mu = cfg.knn_k, cfg.snf_iterations, cfg.snf_mu

    if cfg.transductive:
        allr = np.concatenate([idx_fit, idx_val, idx_test])
        w, eps = fused_graph({m: X[m][allr] for m in X}, {m: M[m][allr] for m in M}, k, t, mu)
        adj = to_torch(gcn_adjacency(w), device)
        gX, gM = _node_tensors(X, M, allr, device)
        off = 0
        for name, rows in (("fit", idx_fit), ("val", idx_val), ("test", idx_test)):
            s = sets[name]
            s.adj, s.gX, s.gM = adj, gX, gM
            s.graph_rows = torch.arange(off, off + len(rows), device=device)
            off += len(rows)
        info = {"mode": "transductive", "nnz": int(w.nnz)}
    else:
        new = [(sets["val"], idx_val), (sets["test"], idx_test)]
        w, eps, a_fit = inductive_graphs(X, M, idx_fit, sets["fit"], new, k, t, mu, device)
        info = {"mode": "inductive", "nnz": int(w.nnz)}
    info.update({"k": k, "snf_iterations": t, "mu": mu})
    state = {f"X:{m}": torch.as_tensor(X_fit[m]) for m in X}
    state.update({f"M:{m}": torch.as_tensor(M_fit[m].astype(np.uint8)) for m in M})
    state.update({f"eps:{m}": torch.as_tensor(np.nan_to_num(eps[m][: len(idx_fit)], nan=0.0))
                  for m in eps})  # fmt: skip
    coo = a_fit.tocoo() if not cfg.transductive else None
    if coo is not None:
        state["adj_index"] = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
        state["adj_value"] = torch.as_tensor(coo.data, dtype=torch.float32)
    return info, state


def adjacency_for_new(
    state: dict[str, torch.Tensor],
    X_new: dict[str, np.ndarray],
    M_new: dict[str, np.ndarray],
    k: int,
    mu: float,
    iterations: int,
):
    """At predict time: attach new samples to the saved training graph (inductive).
    ``iterations`` (the model's ``snf_iterations``) rebuilds a transductive model's graph."""
    mods = [key[2:] for key in state if key.startswith("X:")]
    X_ref = {m: state[f"X:{m}"].numpy() for m in mods}
    M_ref = {m: state[f"M:{m}"].numpy().astype(bool) for m in mods}
    eps = {m: state[f"eps:{m}"].numpy() for m in mods}
    n_ref = len(X_ref[mods[0]])
    if "adj_index" in state:
        idx = state["adj_index"].numpy()
        a_ref = sp.csr_matrix((state["adj_value"].numpy(), (idx[0], idx[1])), (n_ref, n_ref))
    else:  # a transductive model: rebuild the training part of the graph
        a_ref = gcn_adjacency(fused_graph(X_ref, M_ref, k, iterations, mu)[0])
    w_new = attach(X_ref, M_ref, eps, X_new, M_new, k, mu)
    return inductive_adjacency(a_ref, w_new), X_ref, M_ref
