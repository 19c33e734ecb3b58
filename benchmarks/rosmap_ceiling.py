"""How high can any model get on a dataset under the honest protocol?

For balmm's default ``train`` and a set of scikit-learn models that suit a few hundred
samples (linear, shrinkage, PCA, per-modality stacking, kernel and tree models), print

* the mean over folds of fused accuracy / macro-F1 / AUROC in 5-fold cross-validation
  *inside the training split* (``--fold-seeds`` fold assignments), which is what a
  model choice may look at, and
* the test-split figures of the same model fitted once on the whole training split,
  which no choice here looks at (they are printed to show the ceiling, not to pick).

    .venv/bin/python benchmarks/rosmap_ceiling.py [--data PATH] [--fold-seeds 0 1 2]

Every scikit-learn model standardises inside its pipeline, so no statistic of a held-out
fold or of the test split reaches the fit.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import RandomForestClassifier, StackingClassifier
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from balmm.bench.run import cv_fold
from balmm.data.io import load_inputs
from balmm.training.fit import train
from balmm.training.metrics import classification_metrics

C_GRID = np.logspace(-4, 1, 12)


def _lrcv() -> LogisticRegressionCV:
    return LogisticRegressionCV(Cs=C_GRID, cv=5, scoring="neg_log_loss", max_iter=5000)


def sklearn_models(blocks: dict[str, slice]) -> dict:
    """Name -> factory of an unfitted model on the concatenated matrix."""

    def stack():
        per_mod = [
            (
                m,
                make_pipeline(
                    ColumnTransformer([(m, "passthrough", cols)]), StandardScaler(), _lrcv()
                ),
            )
            for m, cols in blocks.items()
        ]
        return StackingClassifier(per_mod, final_estimator=LogisticRegression(), cv=5)

    return {
        "logreg (C by inner CV), concatenated": lambda: make_pipeline(StandardScaler(), _lrcv()),
        "logreg per modality, stacked (late fusion)": stack,
        "LDA with Ledoit-Wolf shrinkage": lambda: make_pipeline(
            StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        ),
        "PCA 50 + logreg (C by inner CV)": lambda: make_pipeline(
            StandardScaler(), PCA(50, random_state=0), _lrcv()
        ),
        "RBF SVM (C=1)": lambda: make_pipeline(
            StandardScaler(), SVC(C=1.0, probability=True, random_state=0)
        ),
        "random forest (500 trees)": lambda: RandomForestClassifier(500, random_state=0),
    }


def _matrix(data, ids) -> np.ndarray:
    return np.hstack([np.asarray(data.mods[m][ids].X, dtype=float) for m in data.mods])


def _summary(metrics: dict) -> tuple[float, float, float]:
    return metrics["accuracy"], metrics["macro_f1"], metrics["auroc"]


def _balmm_fused(result) -> tuple[float, float, float]:
    return _summary(result.metrics["test"]["fused"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=[])
    ap.add_argument("--fold-seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--balmm-seeds", type=int, default=5, help="test runs of balmm (seeds)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    data = load_inputs(args.data)
    if not data.presence().to_numpy().all():
        raise SystemExit("this benchmark needs every sample to have every modality")
    classes = list(data.classes)
    train_ids, test_ids = data.ids("train"), data.ids("test")
    y, y_test = data.y(train_ids), data.y(test_ids)
    X, X_test = _matrix(data, train_ids), _matrix(data, test_ids)
    ends = np.cumsum([data.mods[m].n_vars for m in data.mods])
    blocks = {
        m: slice(int(e - data.mods[m].n_vars), int(e)) for m, e in zip(data.mods, ends, strict=True)
    }
    folds = [
        list(StratifiedKFold(5, shuffle=True, random_state=s).split(X, y)) for s in args.fold_seeds
    ]
    print(f"{len(train_ids)} training / {len(test_ids)} test samples; CV = 5 folds x "
          f"{len(folds)} fold assignments inside the training split")  # fmt: skip
    print(f"{'model':45s} {'CV acc':>7s} {'CV F1':>6s} {'CV AUROC':>8s} | "
          f"{'test acc':>8s} {'test F1':>7s} {'test AUROC':>10s}  time")  # fmt: skip

    def show(name: str, cv: list, test: list, t0: float) -> None:
        c, t = np.mean(cv, 0), np.mean(test, 0)
        print(f"{name:45s} {c[0]:7.3f} {c[1]:6.3f} {c[2]:8.3f} | "
              f"{t[0]:8.3f} {t[1]:7.3f} {t[2]:10.3f}  {time.perf_counter() - t0:.0f} s",
              flush=True)  # fmt: skip

    # balmm: train() on each fold (it carves its own validation split from the rest)
    t0 = time.perf_counter()
    sub = data.subset(train_ids)
    # cv_fold draws the same stratified folds as ``folds`` (they depend on y and the seed)
    cv = [
        _balmm_fused(train(cv_fold(sub, 5, s, k), seed=s + k, threads=1))
        for s in args.fold_seeds
        for k in range(5)
    ]
    test = [_balmm_fused(train(data, seed=s, threads=1)) for s in range(args.balmm_seeds)]
    show("balmm train (defaults)", cv, test, t0)

    for name, make in sklearn_models(blocks).items():
        t0 = time.perf_counter()
        cv = []
        for assignment in folds:
            for fit_rows, held in assignment:
                model = make().fit(X[fit_rows], y[fit_rows])
                cv.append(_summary(classification_metrics(y[held], model.predict_proba(X[held]),
                                                          classes)))  # fmt: skip
        proba = make().fit(X, y).predict_proba(X_test)
        show(name, cv, [_summary(classification_metrics(y_test, proba, classes))], t0)


if __name__ == "__main__":
    main()
