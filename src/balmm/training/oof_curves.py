"""Choices made on out-of-fold log-loss curves: a unimodal model's epoch count, and its
weight decay with the epoch count (:mod:`balmm.training.crossfit` records the curves)."""

from __future__ import annotations

import numpy as np


def _pooled_choices(
    traces: list[np.ndarray], y_held: list[np.ndarray]
) -> tuple[int, np.ndarray, list[tuple[int, float]]]:
    """The epoch count with the lowest pooled log-loss over all folds and that pooled curve,
    and for each fold k, on the other folds' curves only, (epoch count, its pooled loss)."""
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
        ep, c = best(others) if others.any() else (best_all, curve)
        per_fold.append((ep, float(c[ep - 1])))
    return best_all, curve, per_fold


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
    best_all, curve, per_fold = _pooled_choices(traces, y_held)
    return best_all, [ep for ep, _ in per_fold], curve


def choose_decay(
    traces: dict[float, list[np.ndarray]], y_held: list[np.ndarray]
) -> tuple[tuple[float, int], list[tuple[float, int]], np.ndarray]:
    """The (weight decay, epoch count) pair with the lowest pooled out-of-fold log-loss,
    from one set of per-fold curves per decay (``traces[decay]``, as :func:`choose_epochs`
    takes them): over all folds, and for each fold k on the other folds' curves only.
    Returns those and the chosen decay's pooled curve; ties go to the first decay given."""
    scored = {wd: _pooled_choices(t, y_held) for wd, t in traces.items()}
    every = min(scored, key=lambda wd: scored[wd][1][scored[wd][0] - 1])
    if len(y_held) < 2:
        per_fold = [(every, scored[every][0])]
    else:
        per_fold = []
        for k in range(len(y_held)):
            wd_k = min(scored, key=lambda wd: scored[wd][2][k][1])
            per_fold.append((wd_k, scored[wd_k][2][k][0]))
    return (every, scored[every][0]), per_fold, scored[every][1]
