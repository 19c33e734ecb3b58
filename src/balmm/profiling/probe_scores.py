"""Scores of held-out predictions: macro-F1, accuracy and balanced accuracy with percentile
bootstrap intervals and a permutation null, vectorised over thousands of resamples.
"""

from __future__ import annotations

import math

import numpy as np


def _confusions(yb: np.ndarray, pb: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrices for many resamples at once: (B, C, C) from label rows (B, n).

    Vectorised with bincount because the bootstrap and the permutation null
    need thousands of them; the resulting F1 equals sklearn's ``f1_score``
    (checked in the tests).
    """
    b = yb.shape[0]
    flat = (np.arange(b)[:, None] * n_classes * n_classes) + yb * n_classes + pb
    cm = np.bincount(flat.ravel(), minlength=b * n_classes * n_classes)
    return cm.reshape(b, n_classes, n_classes).astype(np.float64)


def _metrics_from_cm(cm: np.ndarray) -> dict[str, np.ndarray]:
    """macro-F1 / accuracy / balanced accuracy from (B, C, C) confusions.

    Like sklearn, macro-F1 averages over the classes present in y_true or in
    the predictions, and balanced accuracy over the classes present in y_true.
    """
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    denom = support + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
        recall = np.where(support > 0, tp / support, np.nan)
    used = (support > 0) | (predicted > 0)
    macro_f1 = (f1 * used).sum(axis=1) / np.maximum(used.sum(axis=1), 1)
    acc = tp.sum(axis=1) / cm.sum(axis=(1, 2))
    bal = np.nanmean(recall, axis=1)
    return {"macro_f1": macro_f1, "accuracy": acc, "balanced_accuracy": bal, "f1": f1}


def score_predictions(
    y: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Point metrics and bootstrap intervals from (out-of-fold) probabilities."""
    c = len(classes)
    pred = proba.argmax(axis=1)
    n = len(y)
    full = _metrics_from_cm(_confusions(y[None, :], pred[None, :], c))
    out: dict = {k: float(v[0]) for k, v in full.items() if k != "f1"}
    present = np.bincount(y, minlength=c) > 0
    out["per_class_f1"] = {classes[i]: float(full["f1"][0, i]) for i in range(c) if present[i]}
    alpha = (1 - level) / 2
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        boot = _metrics_from_cm(_confusions(y[idx], pred[idx], c))
        for key in ("macro_f1", "accuracy", "balanced_accuracy"):
            lo, hi = np.nanquantile(boot[key], [alpha, 1 - alpha])
            out[f"{key}_ci"] = (float(lo), float(hi))
        # Permutation null: the same predictions scored against shuffled labels
        # (what macro-F1 a label-blind probe with this prediction mix reaches).
        perm = np.argsort(rng.random((n_boot, n)), axis=1)
        null = _metrics_from_cm(_confusions(y[perm], np.broadcast_to(pred, perm.shape), c))
        out["null_macro_f1_95"] = float(np.quantile(null["macro_f1"], 0.95))
        out["null_macro_f1_mean"] = float(null["macro_f1"].mean())
        out["permutation_p"] = float(
            (1 + np.sum(null["macro_f1"] >= out["macro_f1"])) / (1 + n_boot)
        )
    else:
        for key in ("macro_f1", "accuracy", "balanced_accuracy"):
            out[f"{key}_ci"] = (math.nan, math.nan)
        out["null_macro_f1_95"] = math.nan
        out["null_macro_f1_mean"] = math.nan
        out["permutation_p"] = math.nan
    return out
