"""Classic floors: scikit-learn classifiers per modality and on all modalities concatenated.

They answer "is it better than the simple thing?". Preprocessing is balmm's own
:class:`~balmm.data.preprocess.Preprocessor`, fitted on the training samples only;
hyper-parameters are either fixed or chosen by cross-validation inside the
training samples, so the test samples are touched once, for the final metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from balmm.data.dataset import MultiOmicsData

logger = logging.getLogger("balmm")

CLASSIC_METHODS: dict[str, str] = {
    "logreg": "L2 logistic regression, C in 1e-3..10 chosen by stratified 3-fold CV (log-loss; "
    "fewer folds for classes with < 3 training samples) on the training samples",
    "svm": "linear SVM (C=1), probabilities by stratified 3-fold Platt calibration on the "
    "training samples",
    "hgb": "histogram gradient-boosted trees, early stopping on 20% of the training samples "
    "(when >= 50 samples and >= 5 per class)",
    "stacked-logreg": "logreg (as above) per modality, stacked on their 5-fold out-of-fold "
    "log-probabilities by balmm's Stacker (multinomial L2 logistic regression, C by inner CV "
    "on log-loss); a sample missing a modality is predicted from the ones it has",
}
STACKED = "stacked-logreg"  # one row, "stacked-logreg:fused"; not a per-modality classifier
OOF_FOLDS = 5
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc")
CONCAT = "concat"


def make_classifier(name: str, seed: int, y_train: np.ndarray) -> Any:
    """A fresh scikit-learn classifier for ``name`` (see :data:`CLASSIC_METHODS`).

    Inner cross-validation uses 3 stratified folds, fewer when the smallest training
    class is smaller (down to 2); with a single-sample class logistic regression falls
    back to C=1 and the SVM, which cannot be calibrated, is skipped (returns None).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import LinearSVC

    min_count = int(np.bincount(y_train)[np.unique(y_train)].min())
    folds = min(3, min_count)
    if name == "logreg":
        if folds < 2:
            return LogisticRegression(C=1.0, max_iter=2000)
        # Inner CV on the training samples only (log-loss), then refit on all of them.
        return GridSearchCV(
            LogisticRegression(max_iter=2000),
            {"C": np.logspace(-3, 1, 5).tolist()},
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            scoring="neg_log_loss",
        )
    if name == "svm":
        svm = LinearSVC(C=1.0, random_state=seed, max_iter=5000)
        if folds < 2:
            return None
        return CalibratedClassifierCV(
            svm, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)
        )
    if name == STACKED:
        raise ValueError(f"{STACKED} stacks several classifiers; see stacked_logreg_row")
    if name == "hgb":
        return HistGradientBoostingClassifier(
            max_iter=200,
            learning_rate=0.1,
            # Its stratified 20% hold-out needs a few samples of every class.
            early_stopping=len(y_train) >= 50 and min_count >= 5,
            validation_fraction=0.2,
            n_iter_no_change=10,
            random_state=seed,
        )
    raise ValueError(f"unknown classic method {name!r}; known: {', '.join(CLASSIC_METHODS)}")


def _full_proba(clf: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with one column per class, also for classes absent from training."""
    p = clf.predict_proba(x)
    out = np.zeros((len(x), n_classes))
    out[:, np.asarray(clf.classes_, dtype=int)] = p
    return out


def _metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, float]:
    from balmm.training.metrics import classification_metrics

    m = classification_metrics(y, proba, classes)
    return {k: float(m.get(k, np.nan)) for k in METRICS}


def classic_floors(
    data: MultiOmicsData,
    train_ids: Sequence[str] | pd.Index,
    test_ids: Sequence[str] | pd.Index,
    seed: int = 0,
    methods: Sequence[str] = tuple(CLASSIC_METHODS),
    max_features: int = 2000,
) -> list[dict[str, Any]]:
    """Fit each classic method per modality and on the concatenation; score on ``test_ids``.

    Per-modality models train and test on the samples that have that modality. The
    concatenated model uses every sample; a missing modality contributes zeros after
    scaling (i.e. the training mean).

    Returns one dict per (method, input): ``method`` (e.g. ``logreg:mRNA``,
    ``logreg:concat``; ``stacked-logreg:fused`` for the stack), ``classic``, ``modality``,
    ``n_train``, ``n_test``, ``seconds`` and the metrics of :data:`METRICS`.
    """
    from balmm.data.preprocess import Preprocessor

    train_ids, test_ids = pd.Index(train_ids), pd.Index(test_ids)
    pre = Preprocessor(max_features=max_features).fit(data, train_ids)
    tr = pre.transform(data, train_ids)
    te = pre.transform(data, test_ids)
    classes = list(tr.classes)
    inputs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in tr.X:
        mtr, mte = tr.mask[name] & (tr.y >= 0), te.mask[name] & (te.y >= 0)
        inputs[name] = (tr.X[name][mtr], tr.y[mtr], te.X[name][mte], te.y[mte])
    if len(tr.X) > 1:
        ltr, lte = tr.y >= 0, te.y >= 0
        inputs[CONCAT] = (
            np.hstack([tr.X[n] for n in tr.X])[ltr],
            tr.y[ltr],
            np.hstack([te.X[n] for n in te.X])[lte],
            te.y[lte],
        )
    rows: list[dict[str, Any]] = []
    # One BLAS/OpenMP thread: these fits are tiny, and a thread pool per fit costs 10-50x
    # more than the fit itself on a busy machine; run seeds in parallel with --jobs instead.
    with threadpool_limits(limits=1):
        for method in methods:
            if method == STACKED:
                rows.append(stacked_logreg_row(tr, te, seed))
            else:
                rows.extend(_fit_inputs(method, inputs, classes, seed))
    return rows


def _oof_and_test_logits(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Out-of-fold log-probabilities of ``logreg`` on (x, y) and those of its refit on all of
    them for ``x_test``; None when a class has fewer than 2 samples (no stratified folds)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(y)[np.unique(y)]
    if len(counts) < 2 or counts.min() < 2:
        return None
    folds = StratifiedKFold(min(OOF_FOLDS, int(counts.min())), shuffle=True, random_state=seed)
    oof = np.zeros((len(y), n_classes))
    oof[:, np.unique(y)] = cross_val_predict(
        make_classifier("logreg", seed, y), x, y, cv=folds, method="predict_proba"
    )
    clf = make_classifier("logreg", seed, y).fit(x, y)
    test = _full_proba(clf, x_test, n_classes) if len(x_test) else np.zeros((0, n_classes))
    return np.log(np.clip(oof, 1e-12, 1.0)), np.log(np.clip(test, 1e-12, 1.0))


def stacked_logreg_row(tr: Any, te: Any, seed: int) -> dict[str, Any]:
    """The ``stacked-logreg`` floor on preprocessed training/test data (ProcessedData).

    Each modality's logreg sees only the training samples that have it; its out-of-fold
    log-probabilities (folds stratified, C chosen inside each fold) train the
    :class:`~balmm.training.stacking.Stacker` over every labelled training sample, and the
    per-modality refits on all their training samples feed it at test time.
    """
    from balmm.training.stacking import Stacker

    classes = list(tr.classes)
    n_classes = len(classes)
    ltr, lte = tr.y >= 0, te.y >= 0
    row: dict[str, Any] = {
        "method": f"{STACKED}:fused",
        "classic": STACKED,
        "modality": "fused",
        "n_train": int(ltr.sum()),
        "n_test": int(lte.sum()),
    }
    t0 = time.perf_counter()
    oof: dict[str, np.ndarray] = {}
    test: dict[str, np.ndarray] = {}
    for m in tr.X:
        have_tr, have_te = tr.mask[m] & ltr, te.mask[m] & lte
        got = _oof_and_test_logits(
            tr.X[m][have_tr], tr.y[have_tr], te.X[m][have_te], n_classes, seed
        )
        if got is None:
            logger.warning("%s: %s skipped, a class has < 2 training samples with it", STACKED, m)
            continue
        oof[m] = np.zeros((len(tr.y), n_classes))
        oof[m][have_tr] = got[0]
        test[m] = np.zeros((len(te.y), n_classes))
        test[m][have_te] = got[1]
    if not oof or row["n_test"] == 0 or len(np.unique(tr.y[ltr])) < 2:
        row.update(dict.fromkeys(METRICS, np.nan))
    else:
        present_tr = {m: tr.mask[m][ltr] for m in oof}
        stack = Stacker(seed=seed).fit({m: v[ltr] for m, v in oof.items()}, present_tr, tr.y[ltr])
        proba = stack.predict_proba(
            {m: v[lte] for m, v in test.items()}, {m: te.mask[m][lte] for m in test}
        )
        row.update(_metrics(te.y[lte], proba, classes))
    row["seconds"] = time.perf_counter() - t0
    return row


def _fit_inputs(
    method: str,
    inputs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    classes: list[str],
    seed: int,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, (xtr, ytr, xte, yte) in inputs.items():
        row: dict[str, Any] = {
            "method": f"{method}:{name}",
            "classic": method,
            "modality": name,
            "n_train": len(ytr),
            "n_test": len(yte),
        }
        t0 = time.perf_counter()
        if len(yte) == 0:  # e.g. an assay measured in training samples only (BRCA protein)
            logger.info("classic %s on %s: no labelled test sample has it, no score", method, name)
            row.update(dict.fromkeys(METRICS, np.nan))
        elif len(np.unique(ytr)) < 2:
            logger.warning("classic %s on %s skipped: fewer than 2 training classes", method, name)
            row.update(dict.fromkeys(METRICS, np.nan))
        elif (clf := make_classifier(method, seed, ytr)) is None:
            logger.warning("classic %s on %s skipped: a class has 1 training sample", method, name)
            row.update(dict.fromkeys(METRICS, np.nan))
        else:
            clf.fit(xtr, ytr)
            row.update(_metrics(yte, _full_proba(clf, xte, len(classes)), classes))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows
