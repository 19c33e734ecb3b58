"""Cross-validated probes: how well does each modality (or a set of them) predict the label?

A probe is a simple classifier fitted with stratified k-fold cross-validation
on **training samples only**; every figure comes from out-of-fold predictions
(each sample is predicted by a model that never saw it), with percentile
bootstrap intervals over samples. The default probe is scikit-learn's
``LogisticRegression`` (standardise -> optional PCA -> L2 logistic regression,
all fitted inside each fold, so nothing leaks from the held-out fold); a small
torch MLP is available with ``kind="mlp"``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from balmm.optim import adamw
from balmm.profiling.mi import label_mi_bootstrap, resolve_device

PCA_ABOVE = 256  # probes reduce wider inputs to PCA_DIMS components (inside each fold)
PCA_DIMS = 64
CLIP = 10.0  # standardised values are clipped to +-CLIP inside each fold


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


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):
    """A small torch MLP (one hidden layer, dropout, weight decay) with the sklearn API."""

    def __init__(
        self,
        hidden: int = 64,
        epochs: int = 60,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        dropout: float = 0.3,
        batch_size: int = 256,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.device = device
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> TorchMLPClassifier:
        self.classes_ = np.unique(y)
        dev = resolve_device(self.device)
        torch.manual_seed(self.seed)
        codes = np.searchsorted(self.classes_, y)
        xt = torch.as_tensor(np.asarray(X, dtype=np.float32), device=dev)
        yt = torch.as_tensor(codes, dtype=torch.long, device=dev)
        self.model_ = torch.nn.Sequential(
            torch.nn.Linear(xt.shape[1], self.hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(self.dropout),
            torch.nn.Linear(self.hidden, len(self.classes_)),
        ).to(dev)
        opt = adamw(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        n = xt.shape[0]
        self.model_.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(n, generator=gen).split(self.batch_size):
                idx = idx.to(dev)
                loss = torch.nn.functional.cross_entropy(self.model_(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.model_.eval()
        self.device_ = dev
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            xt = torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device_)
            return torch.softmax(self.model_(xt), dim=1).cpu().numpy().astype(np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


class InnerCVLogisticRegression(ClassifierMixin, BaseEstimator):
    """L2 logistic regression whose ``C`` is chosen by an inner stratified CV on log-loss.

    scikit-learn's ``LogisticRegressionCV`` does the work; this wrapper only shrinks
    the inner fold count to what the smallest class allows, and falls back to a
    fixed ``C`` when a class has a single training sample (tiny classes such as
    NCI-60's two prostate lines end up alone in an outer fold).
    """

    def __init__(self, Cs: tuple[float, ...] = C_GRID, cv: int = 3, max_iter: int = 300) -> None:
        self.Cs = Cs
        self.cv = cv
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> InnerCVLogisticRegression:
        counts = np.unique(y, return_counts=True)[1]
        k = int(min(self.cv, counts.min()))
        if k >= 2:
            inner = StratifiedKFold(n_splits=k, shuffle=True, random_state=0)
            with warnings.catch_warnings():
                # scikit-learn 1.9 announces a new l1_ratios default; plain L2 either way
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*l1_ratios")
                self.model_ = LogisticRegressionCV(
                    Cs=list(self.Cs), cv=inner, scoring="neg_log_loss", max_iter=self.max_iter
                ).fit(X, y)
            self.C_ = float(np.ravel(self.model_.C_)[0])
        else:
            self.C_ = float(np.median(self.Cs))
            self.model_ = LogisticRegression(C=self.C_, max_iter=self.max_iter).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X)


def make_probe(
    n_features: int,
    kind: str = "logreg",
    device: str | None = None,
    seed: int = 0,
    C: float | None = None,
    n_fit: int | None = None,
    blocks: list[tuple[int, int]] | None = None,
):
    """The probe pipeline: impute -> standardise -> PCA (if wide) -> classifier.

    For ``kind="logreg"`` without a fixed ``C`` the L2 strength is chosen by an
    inner 3-fold CV on log-loss inside each outer
    training fold (nested, so the reported out-of-fold figures stay honest):
    weakly regularised probes on wide omics over-fit and give over-confident
    probabilities, which would make H(Y) - CE meaningless. ``n_fit`` (rows the
    model will be fitted on) caps the PCA width. ``blocks`` (column ranges of
    concatenated modalities) makes the imputation/scaling/PCA per block, so the
    widest modality does not take over a joint PCA.
    """

    def prep(width: int) -> list:
        # Clip after scaling: a feature that is near-constant within a fold (a rare
        # mutation, or a modality missing for one sample) gets a tiny scale, and
        # the held-out rows would otherwise reach values in the hundreds.
        out: list = [
            SimpleImputer(strategy="mean", keep_empty_features=True),
            StandardScaler(),
            FunctionTransformer(np.clip, kw_args={"a_min": -CLIP, "a_max": CLIP}),
        ]
        if width > PCA_ABOVE:
            dims = PCA_DIMS if n_fit is None else max(1, min(PCA_DIMS, n_fit - 1))
            out.append(PCA(n_components=dims, random_state=seed))
        return out

    if blocks and len(blocks) > 1:
        steps: list = [
            ColumnTransformer(
                [
                    (f"b{i}", make_pipeline(*prep(hi - lo)), list(range(lo, hi)))
                    for i, (lo, hi) in enumerate(blocks)
                ]
            )
        ]
    else:
        steps = prep(n_features)
    if kind == "logreg" and C is None:
        steps.append(InnerCVLogisticRegression())
    elif kind == "logreg":
        steps.append(LogisticRegression(C=C, max_iter=300))
    elif kind == "mlp":
        steps.append(TorchMLPClassifier(device=device, seed=seed))
    else:
        raise ValueError(f"probe kind must be 'logreg' or 'mlp', got {kind!r}")
    return make_pipeline(*steps)


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
