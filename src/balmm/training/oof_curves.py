"""Choices made on out-of-fold log-loss curves: a unimodal model's epoch count, and its
weight decay with the epoch count (:mod:`balmm.training.crossfit` records the curves)."""

from __future__ import annotations

import numpy as np


def choose_epochs(
    traces: list[np.ndarray], y_held: list[np.ndarray]
) -> tuple[int, list[int], np.ndarray]:
    """The epoch count with the lowest pooled out-of-fold log-loss, from per-fold held-out
    log-probability curves ``traces[k]`` (epochs x held samples x classes; a curve may stop
    early) and the held-out labels ``y_held[k]`` (-1: unlabelled, skipped).

    Returns the count over all folds (for the final model), the count for each fold k
    chosen on the *other* folds' curves only (fold k's OOF predictions are taken at it), and
    the pooled curve. Only epochs that every curve used reaches are candidates; ties go to
    the fewer epochs."""
    lengths = np.array([t.shape[0] for t in traces])
    sums = np.zeros((len(traces), lengths.max()))
    counts = np.zeros(len(traces))
    for k, (t, y) in enumerate(zip(traces, y_held, strict=True)):
        ok = np.flatnonzero(y >= 0)
        sums[k, : len(t)] = -t[:, ok, y[ok]].sum(1)
        counts[k] = len(ok)

    def best(use: np.ndarray) -> tuple[int, np.ndarray]:
        n_ep = int(lengths[use].min())
        curve = sums[use, :n_ep].sum(0) / max(counts[use].sum(), 1)
        return int(np.argmin(curve)) + 1, curve

    every = np.ones(len(traces), dtype=bool)
    best_all, curve = best(every)
    per_fold = []
    for k in range(len(traces)):
        others = every.copy()
        others[k] = False
        per_fold.append(best(others)[0] if others.any() else best_all)
    return best_all, per_fold, curve


def choose_decay(
    traces: dict[float, list[np.ndarray]], y_held: list[np.ndarray]
) -> tuple[tuple[float, int], list[tuple[float, int]], np.ndarray]:
    """The (weight decay, epoch count) pair with the lowest pooled out-of-fold log-loss,
    from one set of per-fold curves per decay (``traces[decay]``, as :func:`choose_epochs`
    takes them): over all folds, and for each fold k on the other folds' curves only.
    Returns those and the chosen decay's pooled curve; ties go to the first decay given."""
    scored = {wd: choose_epochs(t, y_held) for wd, t in traces.items()}
    every = min(scored, key=lambda wd: scored[wd][2][scored[wd][0] - 1])
    per_fold = []
    n_folds = len(y_held)
    for k in range(n_folds):
        if n_folds < 2:
            per_fold.append((every, scored[every][0]))
            continue
        others = [i for i in range(n_folds) if i != k]
        loss = {}
        for wd, t in traces.items():
            ep, _, curve = choose_epochs([t[i] for i in others], [y_held[i] for i in others])
            loss[wd] = (curve[ep - 1], ep)
        wd_k = min(loss, key=lambda wd: loss[wd][0])
        per_fold.append((wd_k, loss[wd_k][1]))
    return (every, scored[every][0]), per_fold, scored[every][2]
