"""Choices made on out-of-fold curves: a model's epoch count, a unimodal model's weight decay
with its epoch count (:mod:`balmm.training.crossfit` and :mod:`.stage2` record the curves),
and the stage-2 weights' per-epoch evidence (each head's pooled OOF macro-F1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from balmm.training.metrics import macro_f1


def _pooled_choices(
    traces: list[np.ndarray], y_held: list[np.ndarray], per_fold: bool = True
) -> tuple[int, np.ndarray, list[tuple[int, float]]]:
    """The epoch count with the lowest pooled log-loss over all folds and that pooled curve,
    and for each fold k (``per_fold``), on the other folds' curves only, (epoch count, its
    pooled loss)."""
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
    choices = []
    for k in range(len(traces) if per_fold else 0):
        others = every.copy()
        others[k] = False
        ep, c = best(others) if others.any() else (best_all, curve)
        choices.append((ep, float(c[ep - 1])))
    return best_all, curve, choices


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
    traces: dict[float, list[np.ndarray]],
    y_held: list[np.ndarray],
    pairs: dict[float, list[list[np.ndarray | None]]] | None = None,
    y_groups: list[np.ndarray] | None = None,
    group_of: list[int] | None = None,
) -> tuple[tuple[float, int], list[tuple[float, int]], np.ndarray]:
    """The (weight decay, epoch count) pair with the lowest pooled out-of-fold log-loss,
    from one set of per-fold curves per decay (``traces[decay]``, as :func:`choose_epochs`
    takes them): over all folds, and for each fold k on the other folds' curves only.
    Returns those and the chosen decay's pooled curve; ties go to the first decay given.

    With ``pairs`` (nested cross-fitting), fold k's pair is chosen on the curves
    ``pairs[decay][k][j]`` (j != k) instead: fold j's held-out rows scored by a model that
    trained on neither fold j nor fold k, so fold k's labels reach no part of its choice.
    Where the pairs are of groups of folds (:func:`balmm.training.nested.nest_groups`),
    ``y_groups[h]`` are group h's held-out labels and fold k takes the choice of its group
    ``group_of[k]``."""
    scored = {wd: _pooled_choices(t, y_held, pairs is None) for wd, t in traces.items()}
    every = min(scored, key=lambda wd: scored[wd][1][scored[wd][0] - 1])
    if pairs is not None:
        of = group_of if group_of is not None else list(range(len(y_held)))
        y_pairs = y_groups if y_groups is not None else y_held
        per_group = {g: nested_choice(pairs, y_pairs, g) for g in sorted(set(of))}
        per_fold = [per_group[g] for g in of]
    elif len(y_held) < 2:
        per_fold = [(every, scored[every][0])]
    else:
        per_fold = []
        for k in range(len(y_held)):
            wd_k = min(scored, key=lambda wd: scored[wd][2][k][1])
            per_fold.append((wd_k, scored[wd_k][2][k][0]))
    return (every, scored[every][0]), per_fold, scored[every][1]


def nested_choice(
    pairs: dict[float, list[list[np.ndarray | None]]], y_held: list[np.ndarray], k: int
) -> tuple[float, int]:
    """Fold k's (weight decay, epoch count): the lowest pooled log-loss over the curves
    ``pairs[decay][k][j]`` of every fold j != k (see :func:`choose_decay`)."""
    best: tuple[float, float, int] | None = None
    for wd, per_fold in pairs.items():
        use = [j for j, t in enumerate(per_fold[k]) if t is not None and j != k]
        ep, curve, _ = _pooled_choices([per_fold[k][j] for j in use], [y_held[j] for j in use],
                                       per_fold=False)  # fmt: skip
        if best is None or curve[ep - 1] < best[0]:
            best = (float(curve[ep - 1]), wd, ep)
    assert best is not None
    return best[1], best[2]


def pooled_f1_schedule(
    traces: list[dict[str, np.ndarray]],
    y_held: list[np.ndarray],
    present: list[dict[str, np.ndarray]],
    n_classes: int,
) -> list[dict[str, float]]:
    """Each head's pooled out-of-fold macro-F1 after each epoch, from the folds' held-out
    log-probability curves ``traces[k][head]`` (epochs x held samples x classes): at epoch
    e, fold k's held-out predictions after its e-th epoch, pooled over the folds, scored on
    the labelled samples that have the head's modality (``present[k][head]``; the fused
    head: every labelled sample). Only epochs that every fold's curve reaches are given."""
    n_ep = min((len(next(iter(t.values()))) for t in traces), default=0)
    schedule: list[dict[str, float]] = [{} for _ in range(n_ep)]
    for h in traces[0] if traces else []:
        keep = [(y >= 0) & present[k].get(h, np.ones(len(y), bool)) for k, y in enumerate(y_held)]
        truth = np.concatenate([y[ok] for y, ok in zip(y_held, keep, strict=True)])
        for e in range(n_ep):
            pred = [t[h][e][ok].argmax(1) for t, ok in zip(traces, keep, strict=True)]
            schedule[e][h] = macro_f1(truth, np.concatenate(pred), n_classes)
    return schedule


def choose_student_epochs(cf: Any, students: list[str], fold_kd: list[dict[str, dict]],
                          plan: list[dict], n_classes: int) -> None:  # fmt: skip
    """Each distilled student's epoch count with the lowest pooled OOF log-loss over the
    folds' distillation curves (``fold_kd[k][s]["kd_trace"]``, on fold k's held-out rows that
    have s), into ``cf.kd_epochs`` (a :class:`balmm.training.crossfit.CrossFit`) and the
    student's enabled plan entries; the pooled per-epoch OOF macro-F1 into
    ``cf.oof_f1_curve["kd:<s>"]``."""
    for s in students:
        traces, y_held = [], []
        for k, st in enumerate(fold_kd):
            if "kd_trace" in st.get(s, {}):
                held = np.flatnonzero(cf.folds == k)
                has = cf.present[s][held]
                traces.append(st[s]["kd_trace"].numpy())
                y_held.append(cf.y[held][has])
        if not traces:
            continue
        cf.kd_epochs[s], _, curve = choose_epochs(traces, y_held)
        f1s = pooled_f1_schedule([{s: t} for t in traces], y_held, [{} for _ in y_held], n_classes)
        cf.oof_f1_curve[f"kd:{s}"] = [e[s] for e in f1s]
        for d in plan:
            if d["student"] == s and d["enabled"]:
                d["kd_epochs"] = cf.kd_epochs[s]
                d["kd_epochs_oof_log_loss"] = float(curve[cf.kd_epochs[s] - 1])
