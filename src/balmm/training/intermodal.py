"""Intermodal information for the stage-2 weights: how much label information each
modality carries beyond what the other modalities carry.

Z_m is modality m's out-of-fold unimodal logits (the label-relevant summary of its
embedding; unlike embeddings, logits of different fold models share one coordinate
system, so they can be pooled over folds). With cross-validated logistic-regression
probes (H(Y) - CE in bits, out-of-fold probabilities, as for the label MI):

    I_m = I(Z_m; Y)                       probe on modality m alone
    U_m = I(Z; Y) - I(Z_{-m}; Y)          conditional MI I(Z_m; Y | Z_{-m}): the part
                                          only m carries (>= 0)
    R_m = I_m - U_m                       the part the others carry too (redundancy)
    kappa_m = (U_m - R_m) / I_m  in [-1, 1]

kappa_m = 1: everything m knows about the label is its own (complementary); -1: the
others know it all already (pure redundancy). Samples measured in every modality only.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from balmm.profiling.mi import label_mi_bits


def _probe_bits(z: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> float:
    """I(Z; Y) lower bound in bits from out-of-fold probe probabilities (the ridge strength
    with the lowest out-of-fold log-loss of two)."""
    counts = np.bincount(y, minlength=n_classes)
    folds = int(min(5, counts[counts > 0].min()))
    if folds < 2 or z.shape[1] == 0:
        return 0.0
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    zs = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)
    best = -np.inf
    for c in (0.1, 1.0):
        p = cross_val_predict(LogisticRegression(C=c, max_iter=1000), zs, y, cv=cv,
                              method="predict_proba")  # fmt: skip
        full = np.full((len(y), n_classes), 1e-12)
        full[:, np.unique(y)] = p
        best = max(best, label_mi_bits(y, full))
    return float(best)


def complementarity(
    emb: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    y: np.ndarray,
    n_classes: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Per modality: ``I`` (bits), ``unique`` (U_m), ``redundant`` (R_m) and ``kappa``
    (see module doc), from held-out logits ``emb[m]`` of the same rows (``present[m]``:
    rows measured in m; ``y``: labels, -1 = unlabelled)."""
    mods = list(emb)
    rows = (y >= 0) & np.logical_and.reduce([present[m] for m in mods])
    out: dict[str, dict[str, float]] = {}
    if len(mods) < 2 or rows.sum() < 10:
        return out
    yy = y[rows]
    z = {m: emb[m][rows] - emb[m][rows].mean(1, keepdims=True) for m in mods}
    i_all = _probe_bits(np.hstack([z[m] for m in mods]), yy, n_classes, seed)
    for m in mods:
        i_m = max(0.0, _probe_bits(z[m], yy, n_classes, seed))
        rest = np.hstack([z[o] for o in mods if o != m])
        unique = min(i_m, max(0.0, i_all - _probe_bits(rest, yy, n_classes, seed)))
        kappa = (2.0 * unique - i_m) / i_m if i_m > 0 else 0.0
        out[m] = {"I": i_m, "unique": unique, "redundant": i_m - unique, "kappa": kappa}
    return out
