"""How high can any model get on a dataset under the honest protocol?

For balmm's default ``train`` and a set of scikit-learn models that suit a few hundred
samples (linear, shrinkage, PCA, per-modality stacking, kernel and tree models), print

* the mean over folds of fused accuracy / macro-F1 / AUROC in 5-fold cross-validation
  *inside the training split* (``--fold-seeds`` fold assignments), which is what a
  model choice may look at, and
* the test-split figures of the same model fitted once on the whole training split,
  which no choice here looks at (they are printed to show the ceiling, not to pick).

    .venv/bin/python benchmarks/rosmap_ceiling.py [--data PATH] [--fold-seeds 0 1 2] \
        [--test-seeds 5] [--ablations] [--variant "NAME:key=value,..."] [--no-sklearn] \
        [--jobs 2] [--csv rows.csv] [--label-col COL --split-col COL]

Other datasets: ``--data`` takes INPUTS as ``balmm train`` does (with ``--no-sklearn``,
samples may lack modalities).

``--ablations`` adds balmm with each part of the method switched off in turn
(:data:`ABLATIONS`); ``--variant`` adds any other configuration. ``--csv`` writes one row
per (model, held-out fold or test seed) for paired comparisons.

Every scikit-learn model standardises inside its pipeline, so no statistic of a held-out
fold or of the test split reaches the fit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import RandomForestClassifier, StackingClassifier
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from balmm.bench.run import cv_fold
from balmm.data.io import load_inputs
from balmm.training.fit import train
from balmm.training.metrics import classification_metrics
from balmm.training.stacking import Stacker

C_GRID = np.logspace(-4, 1, 12)
# balmm with one part of the method switched off (TrainConfig keys)
ABLATIONS: dict[str, dict] = {
    "balmm without distillation": {"kd": False},
    "balmm without MI weights (constant)": {"mi_weights": False},
    "balmm without the intermodal term": {"weight_gamma": 0.0},
    "balmm with the OOF-stacked fused head": {"fusion_head": "stack"},
    "balmm with one validation carve (no cross-fitting)": {"folds": 0},
}


def _lrcv() -> LogisticRegressionCV:
    return LogisticRegressionCV(Cs=C_GRID, cv=5, scoring="neg_log_loss", max_iter=5000)


class OOFStack(BaseEstimator, ClassifierMixin):
    """Per-modality logreg (C by inner CV) stacked by balmm's :class:`Stacker` on their
    5-fold out-of-fold log-probabilities (what ``balmm bench``'s ``stacked-logreg`` does)."""

    def __init__(self, blocks: dict[str, slice], seed: int = 0) -> None:
        self.blocks = blocks
        self.seed = seed

    def _model(self):
        return make_pipeline(StandardScaler(), _lrcv())

    def fit(self, x: np.ndarray, y: np.ndarray) -> OOFStack:
        folds = StratifiedKFold(5, shuffle=True, random_state=self.seed)
        oof = {
            m: np.log(np.clip(cross_val_predict(self._model(), x[:, c], y, cv=folds,
                                                method="predict_proba"), 1e-12, 1))
            for m, c in self.blocks.items()
        }  # fmt: skip
        self.models_ = {m: self._model().fit(x[:, c], y) for m, c in self.blocks.items()}
        self.stacker_ = Stacker(seed=self.seed).fit(oof, None, y)
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = {
            m: np.log(np.clip(self.models_[m].predict_proba(x[:, c]), 1e-12, 1))
            for m, c in self.blocks.items()
        }
        return self.stacker_.predict_proba(logits)


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
        "logreg per modality, balmm Stacker on OOF log-probabilities": lambda: OOFStack(blocks),
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


_DATA = None


def _load(source: tuple[list[str], str | None, str | None]):
    """The dataset: INPUTS as ``balmm train`` takes them, with its label and split columns."""
    global _DATA
    if _DATA is None:
        paths, label_col, split_col = source
        _DATA = load_inputs(paths, label_col=label_col, split_col=split_col)
    return _DATA


def _balmm_job(job: tuple) -> tuple:
    """One balmm fit: a CV fold (``("cv", s, k)``) or a test seed (``("test", s)``)."""
    source, overrides, what = job
    warnings.filterwarnings("ignore")
    data = _load(source)
    if what[0] == "cv":
        _, s, k = what
        sub = data.subset(data.ids("train"))
        # cv_fold draws the same stratified folds as the scikit-learn models' folds
        result = train(cv_fold(sub, 5, s, k), seed=s + k, threads=1, **overrides)
    else:
        result = train(data, seed=what[1], threads=1, **overrides)
    return what, _balmm_fused(result)


def _parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    # a comma starts the next key=json only before a key: json strings may hold commas
    pairs = [p.split("=", 1) for p in re.split(r",\s*(?=[A-Za-z_]\w*=)", body) if p.strip()]
    return name.strip(), {k.strip(): json.loads(v) for k, v in pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=[])
    ap.add_argument("--label-col", default=None, help="as balmm train's --label-col")
    ap.add_argument("--split-col", default=None, help="as balmm train's --split-col")
    ap.add_argument("--fold-seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--test-seeds", "--balmm-seeds", type=int, default=5,
                    help="test runs of each balmm variant (seeds 0..N-1); 0 = none")  # fmt: skip
    ap.add_argument("--ablations", action="store_true", help="add the rows of ABLATIONS")
    ap.add_argument("--variant", action="append", default=[],
                    help='extra balmm row, "NAME:key=json,key=json"')  # fmt: skip
    ap.add_argument("--no-defaults", action="store_true", help="skip balmm's defaults row")
    ap.add_argument("--no-sklearn", action="store_true",
                    help="skip the scikit-learn models (samples may lack modalities)")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=1, help="balmm fits in parallel processes")
    ap.add_argument("--csv", default=None, help="per-fold / per-seed rows")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    source = (args.data, args.label_col, args.split_col)
    data = _load(source)
    if not args.no_sklearn and not data.presence().to_numpy().all():
        raise SystemExit("this benchmark needs every sample to have every modality")
    classes = list(data.classes)
    train_ids, test_ids = data.ids("train"), data.ids("test")
    y, y_test = data.y(train_ids), data.y(test_ids)
    # the scikit-learn models' matrices (with --no-sklearn, samples may lack modalities)
    X, X_test = (
        (None, None) if args.no_sklearn else (_matrix(data, train_ids), _matrix(data, test_ids))
    )
    ends = np.cumsum([data.mods[m].n_vars for m in data.mods])
    blocks = {
        m: slice(int(e - data.mods[m].n_vars), int(e)) for m, e in zip(data.mods, ends, strict=True)
    }
    folds = [
        list(StratifiedKFold(5, shuffle=True, random_state=s).split(np.zeros(len(y)), y))
        for s in args.fold_seeds
    ]
    print(f"{len(train_ids)} training / {len(test_ids)} test samples; CV = 5 folds x "
          f"{len(folds)} fold assignments inside the training split")  # fmt: skip
    print(f"{'model':60s} {'CV acc':>7s} {'CV F1':>6s} {'CV AUROC':>8s} | "
          f"{'test acc':>8s} {'test F1':>7s} {'test AUROC':>10s}  time")  # fmt: skip
    records: list[dict] = []

    def show(name: str, cv: list, test: list, t0: float) -> None:
        c = np.mean(cv, 0)
        t = np.mean(test, 0) if test else np.full(3, np.nan)
        print(f"{name:60s} {c[0]:7.3f} {c[1]:6.3f} {c[2]:8.3f} | "
              f"{t[0]:8.3f} {t[1]:7.3f} {t[2]:10.3f}  {time.perf_counter() - t0:.0f} s",
              flush=True)  # fmt: skip

    def record(name: str, what: tuple, vals: tuple) -> None:
        records.append({"model": name, "split": what[0], "seed": what[1],
                        "fold": what[2] if len(what) > 2 else -1,
                        "accuracy": vals[0], "macro_f1": vals[1], "auroc": vals[2]})  # fmt: skip

    variants: list[tuple[str, dict]] = [] if args.no_defaults else [("balmm train (defaults)", {})]
    if args.ablations:
        variants += list(ABLATIONS.items())
    variants += [_parse_variant(v) for v in args.variant]
    cv_whats = [("cv", s, k) for s in args.fold_seeds for k in range(5)]
    test_whats = [("test", s) for s in range(args.test_seeds)]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for name, overrides in variants:
            t0 = time.perf_counter()
            jobs = [(source, overrides, w) for w in cv_whats + test_whats]
            done = list(pool.map(_balmm_job, jobs))
            for what, vals in done:
                record(name, what, vals)
            cv = [v for w, v in done if w[0] == "cv"]
            test = [v for w, v in done if w[0] == "test"]
            show(name, cv, test, t0)
            _write(args.csv, records)

    for name, make in ({} if args.no_sklearn else sklearn_models(blocks)).items():
        t0 = time.perf_counter()
        cv = []
        for s, assignment in zip(args.fold_seeds, folds, strict=True):
            for k, (fit_rows, held) in enumerate(assignment):
                model = make().fit(X[fit_rows], y[fit_rows])
                cv.append(_summary(classification_metrics(y[held], model.predict_proba(X[held]),
                                                          classes)))  # fmt: skip
                record(name, ("cv", s, k), cv[-1])
        proba = make().fit(X, y).predict_proba(X_test)
        test = [_summary(classification_metrics(y_test, proba, classes))]
        record(name, ("test", 0), test[0])
        show(name, cv, test, t0)
        _write(args.csv, records)


def _write(path: str | None, records: list[dict]) -> None:
    """Rows so far (rewritten after each model, so an interrupted run keeps them)."""
    if path:
        import pandas as pd

        pd.DataFrame(records).to_csv(path, index=False)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
