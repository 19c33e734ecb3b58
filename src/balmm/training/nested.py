"""Nested cross-fitting: fold k's stage-1 choices made on models that never saw fold k.

Without nesting, fold k's epoch count (and decay) is chosen on the other folds' held-out
curves, and the models behind those curves trained on fold k's rows, labels included: fold
k's out-of-fold (OOF) outputs could depend on fold k's labels. Here each unordered pair of
folds {j, k} gets one more *pair member* per (modality, decay), trained on every training
row outside folds j and k, whose held-out log-probabilities are recorded after every epoch
on fold j's rows and on fold k's rows. Fold k's choice pools the curves of the pairs
{j, k} on fold j's rows (j != k): no model behind them read fold k. That is K (K - 1) / 2
members per (modality, decay) instead of the K (K - 1) of nesting every fold, since one
pair member serves both of its folds.

Distillation inside fold k (:func:`balmm.training.crossfit.crossfit_kd`) takes its targets on
fold j's rows from the teacher's pair member {j, k} at fold k's chosen (decay, count), a
teacher that saw neither fold j nor fold k: :func:`fold_targets`.

Above ``NEST_GROUPS`` folds the pairs are pairs of *groups* of neighbouring folds
(:func:`nest_groups`): at K = 10, 45 fold pairs would cost four times the 10 fold models
themselves, while 5 groups keep 10 pair models. Fold k's choice then pools the pairs
{g, h} on group h's rows, g being fold k's group: models that saw neither fold k nor its
group. The K fold models and the final model are those of the ungrouped scheme.

A pair member runs all ``pretrain_epochs``: a patience rule on its held-out loss would read
fold j's or fold k's labels, and so make the candidate epochs of fold k's (or j's) choice
depend on that fold's own labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from balmm.config import TrainConfig
from balmm.training.curves import Member, new_member
from balmm.training.fold_sets import GraphInputs, pair_sets
from balmm.training.tensors import Split, held_with, restrict, single

if TYPE_CHECKING:
    from balmm.training.crossfit import CrossFit


# above this many folds, nesting pairs groups of neighbouring folds (module docstring)
NEST_GROUPS = 5


def nest_groups(folds: np.ndarray) -> np.ndarray:
    """Each sample's nesting group: its fold, up to ``NEST_GROUPS`` folds; beyond, fold k of
    K belongs to group k * NEST_GROUPS // K (neighbouring folds pooled)."""
    n_folds = int(folds.max()) + 1
    if n_folds <= NEST_GROUPS:
        return folds
    return np.where(folds >= 0, folds * NEST_GROUPS // n_folds, folds)


def fold_pairs(n_groups: int) -> list[tuple[int, int]]:
    """Every unordered pair of groups (j, k), j < k."""
    return [(j, k) for k in range(n_groups) for j in range(k)]


def can_nest(present: np.ndarray, groups: np.ndarray) -> bool:
    """At least 3 groups (:func:`nest_groups`), and every pair's training rows hold at
    least 4 samples with the modality (``present``); otherwise the modality keeps the other
    folds' rule."""
    n_groups = int(groups.max()) + 1
    return n_groups >= 3 and all(int(present[(groups != j) & (groups != k)].sum()) >= 4
                                 for j, k in fold_pairs(n_groups))  # fmt: skip


def make_pair_sets(
    train: Split, groups: np.ndarray, cfg: TrainConfig, graph_inputs: GraphInputs | None = None
) -> list[dict[str, Split]]:
    """Each pair's ``inside`` and ``held`` sets (see :func:`fold_sets.pair_sets`), in the
    order of :func:`fold_pairs`."""
    n_groups = int(groups.max()) + 1
    return [pair_sets(train, groups, j, k, cfg, graph_inputs) for j, k in fold_pairs(n_groups)]


def pair_members(
    m: str, n_in: int, n_classes: int, cfg: TrainConfig, train: Split, groups: np.ndarray,
    graphs: list[dict[str, Split]] | None = None,
) -> list[Member]:  # fmt: skip
    """The pair members of one (modality, decay) unit. Their sets hold modality ``m``
    alone, built here (so only one unit's copies live at a time), or with ``gcn`` come
    from ``graphs`` (:func:`make_pair_sets` on every modality: the SNF graph fuses them).
    Their random streams are their own (``pair<j>-<k>/``), so the fold members beside them
    train exactly as without them."""
    sets = graphs if graphs is not None else make_pair_sets(single(train, m), groups, cfg)
    members = []
    for (j, k), s in zip(fold_pairs(int(groups.max()) + 1), sets, strict=True):
        mb = new_member(m, n_in, n_classes, cfg, -1, restrict(s["inside"], m),
                        held_with(s["held"], m), cfg.pretrain_epochs, keep=False,
                        scope=f"pair{j}-{k}/")  # fmt: skip
        mb.early_stop = False  # see the module docstring
        members.append(mb)
    return members


def by_fold(
    traces: list[np.ndarray], groups: np.ndarray, present: np.ndarray
) -> list[list[np.ndarray | None]]:
    """The pair members' curves as ``out[k][j]``: pair {j, k} on group j's rows that have
    the modality (``present``), for group k's choice; None where j == k."""
    n_groups = int(groups.max()) + 1
    n_with = [int(present[groups == j].sum()) for j in range(n_groups)]
    out: list[list[np.ndarray | None]] = [[None] * n_groups for _ in range(n_groups)]
    for (j, k), t in zip(fold_pairs(n_groups), traces, strict=True):
        out[k][j] = t[:, : n_with[j]]
        out[j][k] = t[:, n_with[j] :]
    return out


def fold_targets(cf: CrossFit, k: int) -> dict[str, np.ndarray]:
    """Fold k's distillation targets over every training row (NaN where the teacher is
    absent, and on fold k): on group h's rows, the log-probabilities of the teacher's pair
    member {g, h} (g: fold k's group; a group is a fold up to ``NEST_GROUPS`` folds) after
    fold k's chosen epoch count, at fold k's chosen decay; on the other folds of fold k's
    own group, those of a pair member {g, h} on group g's rows. Either way a teacher that
    saw neither the row's fold nor fold k. A teacher without pair curves (not nested) gives
    its OOF logits, as without nesting."""
    groups = nest_groups(cf.folds)
    g = int(groups[np.flatnonzero(cf.folds == k)[0]])
    n_groups = int(groups.max()) + 1
    out = {}
    for t, lg in cf.logits.items():
        curves = cf.pair_traces.get(t)
        if curves is None:
            out[t] = lg
            continue
        wd, ep = cf.fold_decay[t][k], cf.fold_epochs[t][k]
        own = np.full_like(lg, np.nan)
        for h, trace in enumerate(curves[wd][g]):
            if trace is not None:
                rows = np.flatnonzero(groups == h)
                own[rows[cf.present[t][rows]]] = trace[ep - 1]
        rows = np.flatnonzero(groups == g)
        rows = rows[cf.present[t][rows]]
        if (cf.folds[rows] != k).any():  # grouped: fold k's neighbours in its group
            other = next(h for h in range(n_groups) if h != g)
            beside = cf.folds[rows] != k
            own[rows[beside]] = curves[wd][other][g][ep - 1][beside]
        out[t] = own
    return out
