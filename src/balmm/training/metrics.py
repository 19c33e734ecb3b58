"""Classification metrics (scikit-learn) plus expected calibration error."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over ``n_classes`` labels (absent classes score 0, as scikit-learn's
    ``f1_score(..., labels=range(C), average="macro", zero_division=0)``).

    Written with a bincount because it runs thousands of times per training run
    (every epoch, every bootstrap replicate) where scikit-learn's input validation
    costs 30 ms a call; tests check it equals scikit-learn's.
    """
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if len(y) == 0:
        return float("nan")
    cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: mean |accuracy - confidence| over equal-width confidence bins,
    weighted by bin size (Guo et al. 2017)."""
    if len(y) == 0:
        return float("nan")
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(float)
    bins = np.clip((conf * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def auroc(y: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    """Binary: AUROC of class 1; multiclass: macro one-vs-rest. NaN when a class is absent."""
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    if len(present) < n_classes:
        return float("nan")
    p = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
    return float(
        roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(n_classes))
    )


def classification_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict:
    """Every metric of metrics.json for one head on one split (labelled samples only)."""
    keep = y >= 0
    y, proba = y[keep], proba[keep]
    n_classes = len(classes)
    if len(y) == 0:
        return {"n": 0}
    pred = proba.argmax(axis=1)
    per_class = f1_score(y, pred, labels=np.arange(n_classes), average=None, zero_division=0)
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": macro_f1(y, pred, n_classes),
        "weighted_f1": float(
            f1_score(y, pred, labels=np.arange(n_classes), average="weighted", zero_division=0)
        ),
        "auroc": auroc(y, proba, n_classes),
        "ece": expected_calibration_error(y, proba),
        "per_class_f1": {c: float(f) for c, f in zip(classes, per_class, strict=True)},
        "confusion_matrix": confusion_matrix(y, pred, labels=np.arange(n_classes)).tolist(),
    }


def bootstrap_f1(
    y: np.ndarray, pred: np.ndarray, n_classes: int, n_boot: int, seed: int
) -> tuple[float, float]:
    """(macro-F1, 5th percentile over bootstrap resamples of the samples)."""
    f = macro_f1(y, pred, n_classes)
    if n_boot <= 0 or len(y) < 2:
        return f, f
    rng = np.random.default_rng(seed)
    vals = [macro_f1(y[i], pred[i], n_classes) for i in rng.integers(0, len(y), (n_boot, len(y)))]
    return f, float(np.percentile(vals, 5))
