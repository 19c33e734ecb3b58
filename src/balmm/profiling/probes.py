"""Cross-validated probes: how well does each modality (or a set of them) predict the label?

A probe is a simple classifier fitted with stratified k-fold cross-validation
on **training samples only**; every figure comes from out-of-fold predictions
(each sample is predicted by a model that never saw it), with percentile
bootstrap intervals over samples. The default probe is scikit-learn's
``LogisticRegression`` (standardise -> optional PCA -> L2 logistic regression,
all fitted inside each fold, so nothing leaks from the held-out fold); a small
torch MLP is available with ``kind="mlp"``. The models are in
:mod:`balmm.profiling.probe_models`, the scoring in :mod:`balmm.profiling.probe_scores`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from balmm.profiling.mi import label_mi_bootstrap
from balmm.profiling.probe_models import make_probe
from balmm.profiling.probe_scores import score_predictions


@dataclass
class ProbeResult:
    """Out-of-fold performance of one probe."""

    n_samples: int
    n_folds: int
    macro_f1: float
    macro_f1_ci: tuple[float, float]
    accuracy: float
    accuracy_ci: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    per_class_f1: dict[str, float]
    mi_label_bits: float
    mi_label_bits_ci: tuple[float, float]
    null_macro_f1_95: float  # 95th percentile of macro-F1 under shuffled labels
    null_macro_f1_mean: float  # its mean: what a label-blind probe scores
    permutation_p: float  # P(null macro-F1 >= observed), with +1 smoothing
    C: float  # median L2 strength chosen by the inner CV (NaN for the MLP)
    oof_proba: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "n_folds": self.n_folds,
            "macro_f1": self.macro_f1,
            "macro_f1_ci": list(self.macro_f1_ci),
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci),
            "balanced_accuracy": self.balanced_accuracy,
            "balanced_accuracy_ci": list(self.balanced_accuracy_ci),
            "per_class_f1": dict(self.per_class_f1),
            "null_macro_f1_95": self.null_macro_f1_95,
            "null_macro_f1_mean": self.null_macro_f1_mean,
            "permutation_p": self.permutation_p,
            "C": self.C,
        }


def n_folds_for(y: np.ndarray, max_folds: int = 5) -> int:
    """Folds for stratified CV: at most ``max_folds``, at least 2, at most the smallest class."""
    counts = np.bincount(y)
    counts = counts[counts > 0]
    return int(max(2, min(max_folds, counts.min())))


def oof_proba(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    kind: str = "logreg",
    n_folds: int = 5,
    seed: int = 0,
    device: str | None = None,
    C: float | None = None,
    blocks: list[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, int, float]:
    """Out-of-fold class probabilities (n x n_classes) from stratified k-fold CV.

    Returns (probabilities, number of folds, median L2 ``C`` chosen in the folds
    or the fixed ``C``; NaN for the MLP).
    """
    k = n_folds_for(y, n_folds)
    # float64: in float32 a column that is constant within a fold keeps a
    # rounding-noise variance (~1e-16) that StandardScaler does not treat as
    # zero, and the held-out rows are then blown up by a factor of ~1e8.
    X = np.asarray(X, dtype=np.float64)
    proba = np.zeros((len(y), n_classes))
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    n_fit = len(y) - int(math.ceil(len(y) / k))  # smallest outer training fold
    template = make_probe(X.shape[1], kind, device, seed, C, n_fit, blocks)
    chosen = []
    # BLAS threads only slow these small solves down (measured 5-8x on 2 shared
    # cores); the limit is scoped to this call, not set at import.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        # Tiny classes and short max_iter are expected on small assays; the
        # intervals and the report's warnings say what matters.
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message="The least populated class")
        for tr, te in skf.split(X, y):
            model = clone(template).fit(X[tr], y[tr])
            cols = np.asarray(model.classes_, dtype=np.int64)
            proba[np.ix_(te, cols)] = model.predict_proba(X[te])
            last = model[-1]
            if hasattr(last, "C_"):
                chosen.append(float(np.median(np.ravel(last.C_))))
            elif hasattr(last, "C"):
                chosen.append(float(last.C))
    c_used = float(np.median(chosen)) if chosen else float("nan")
    return proba, k, c_used


def run_probe(
    X: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    kind: str = "logreg",
    n_folds: int = 5,
    n_boot: int = 200,
    seed: int = 0,
    device: str | None = None,
    blocks: list[tuple[int, int]] | None = None,
) -> ProbeResult:
    """Cross-validated probe on (X, y): metrics with intervals and label MI (bits)."""
    y = np.asarray(y, dtype=np.int64)
    proba, k, c_used = oof_proba(X, y, len(classes), kind, n_folds, seed, device, None, blocks)
    s = score_predictions(y, proba, classes, n_boot, seed)
    mi, mi_ci = label_mi_bootstrap(y, proba, n_boot=n_boot, seed=seed)
    return ProbeResult(
        n_samples=len(y),
        n_folds=k,
        macro_f1=s["macro_f1"],
        macro_f1_ci=s["macro_f1_ci"],
        accuracy=s["accuracy"],
        accuracy_ci=s["accuracy_ci"],
        balanced_accuracy=s["balanced_accuracy"],
        balanced_accuracy_ci=s["balanced_accuracy_ci"],
        per_class_f1=s["per_class_f1"],
        mi_label_bits=mi,
        mi_label_bits_ci=mi_ci,
        null_macro_f1_95=s["null_macro_f1_95"],
        null_macro_f1_mean=s["null_macro_f1_mean"],
        permutation_p=s["permutation_p"],
        C=c_used,
        oof_proba=proba,
    )


def cv_macro_f1(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    kind: str = "logreg",
    n_folds: int = 5,
    seed: int = 0,
    device: str | None = None,
    C: float | None = None,
    blocks: list[tuple[int, int]] | None = None,
) -> float:
    """Out-of-fold macro-F1 only (the Shapley value function)."""
    proba, _, _ = oof_proba(X, y, n_classes, kind, n_folds, seed, device, C, blocks)
    return float(f1_score(y, proba.argmax(axis=1), average="macro"))


def chance_macro_f1(y: np.ndarray) -> float:
    """Macro-F1 of always predicting the majority class (the no-information baseline)."""
    y = np.asarray(y, dtype=np.int64)
    major = np.bincount(y).argmax()
    return float(f1_score(y, np.full_like(y, major), average="macro"))
