"""The samples of each cross-fitting fold: the stratified fold assignment, and each fold's
fit / carve / held-out / inside sets (with ``gcn``, their graphs, built on the fold's
training rows only)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from balmm.config import TrainConfig
from balmm.data.splits import stratified_split
from balmm.training.tensors import RowSource, Split


def fold_assignment(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold index (0..k-1) of every labelled sample (fewer folds when the
    rarest class has fewer than k samples)."""
    counts = np.bincount(y[y >= 0])
    k = int(max(2, min(k, counts[counts > 0].min())))
    folds = np.full(len(y), -1)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, held) in enumerate(cv.split(np.zeros(len(y)), y)):
        folds[held] = i
    return folds


def take(s: Split, rows: np.ndarray) -> Split:
    """The samples ``rows`` (positions) of a non-graph split."""
    r = torch.as_tensor(rows, device=s.y.device)
    return Split(s.ids[rows], {m: x[r] for m, x in s.X.items()},
                 {m: mk[r] for m, mk in s.M.items()}, s.y[r])  # fmt: skip


GraphInputs = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


def fold_sets(
    train: Split, folds: np.ndarray, k: int, cfg: TrainConfig,
    graph_inputs: GraphInputs | None = None,
) -> tuple[dict[str, Split], np.ndarray]:  # fmt: skip
    """Fold k's fit / carve / held-out / inside sets and its fit rows (positions in
    ``train``); with ``gcn`` their graphs, from ``graph_inputs`` (:func:`fold_graph_inputs`
    of ``train``, computed here when not given)."""
    inside = np.flatnonzero(folds != k)
    y_in = train.y.cpu().numpy()[inside]
    fit_pos, val_pos = stratified_split(np.arange(len(inside)).astype(str), y_in, cfg.val_size,
                                        cfg.seed + k)  # fmt: skip
    fit_rows = inside[fit_pos.astype(int)]
    val_rows = inside[val_pos.astype(int)]
    sets = {"fit": take(train, fit_rows), "val": take(train, val_rows),
            "held": take(train, np.flatnonzero(folds == k)),
            "inside": take(train, inside)}  # fmt: skip
    if cfg.encoder == "gcn":
        fold_graphs(train, sets, inside, fit_rows, val_rows, np.flatnonzero(folds == k), cfg,
                    graph_inputs)  # fmt: skip
    return sets, fit_rows


def pair_sets(
    train: Split, groups: np.ndarray, j: int, k: int, cfg: TrainConfig,
    graph_inputs: GraphInputs | None = None,
) -> dict[str, Split]:  # fmt: skip
    """Nested cross-fitting's pair {j, k} of groups (folds, or groups of folds:
    ``nested.nest_groups``): ``inside`` = the training rows outside groups j and k,
    ``held`` = group j's rows then group k's (with ``gcn``, a graph over ``inside`` alone
    with the held rows attached, as :func:`fold_graphs` builds a fold's)."""
    inside = np.flatnonzero((groups != j) & (groups != k))
    held = np.concatenate([np.flatnonzero(groups == j), np.flatnonzero(groups == k)])
    sets = {"inside": take(train, inside), "held": take(train, held)}
    if cfg.encoder == "gcn":
        from balmm.model.graph import inductive_graphs

        X, M = fold_graph_inputs(train) if graph_inputs is None else graph_inputs
        inductive_graphs(X, M, inside, sets["inside"], [(sets["held"], held)], cfg.knn_k,
                         cfg.snf_iterations, cfg.snf_mu, train.y.device)  # fmt: skip
        _own_views(sets)
    return sets


def fold_graph_inputs(train: Split) -> GraphInputs:
    """Every modality's features (dense) and presence as numpy: what the folds' and pairs'
    graphs are built from."""
    X = {m: (x.dense() if isinstance(x, RowSource) else x).cpu().numpy()
         for m, x in train.X.items()}  # fmt: skip
    return X, {m: mk.cpu().numpy() for m, mk in train.M.items()}


def _own_views(sets: dict[str, Split]) -> None:
    """A split's own features: a view of its graph's (rows in a run)."""
    for s in sets.values():
        assert s.gX is not None and s.graph_rows is not None
        lo = int(s.graph_rows[0]) if len(s) else 0
        s.X = {m: x[lo : lo + len(s)] for m, x in s.gX.items()}


def fold_graphs(
    train: Split, sets: dict[str, Split], inside: np.ndarray, fit_rows: np.ndarray,
    val_rows: np.ndarray, held_rows: np.ndarray, cfg: TrainConfig,
    graph_inputs: GraphInputs | None = None,
) -> None:  # fmt: skip
    """gcn: a fold's graphs, built as the run's own (``graph.attach_graphs``, inductive) on
    the fold's training rows only: one over all of them (``inside``: the fold's unimodal
    curves and models) with the held-out rows attached, and one over the fold's fit rows
    (distillation and the joint model) with its carve attached. A held-out row is only
    ever an attached node, so it never shapes a graph a fold model trains on."""
    from balmm.model.graph import inductive_graphs

    X, M = fold_graph_inputs(train) if graph_inputs is None else graph_inputs
    dev = train.y.device
    k, t, mu = cfg.knn_k, cfg.snf_iterations, cfg.snf_mu
    inductive_graphs(X, M, inside, sets["inside"], [(sets["held"], held_rows)], k, t, mu, dev)
    inductive_graphs(X, M, fit_rows, sets["fit"], [(sets["val"], val_rows)], k, t, mu, dev)
    _own_views(sets)
