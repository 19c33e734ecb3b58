"""The probe models: scikit-learn pipelines (impute -> standardise -> clip -> PCA when wide
-> classifier) whose classifier is an L2 logistic regression with ``C`` chosen by inner CV
on log-loss, a fixed-``C`` one, or a small torch MLP with the scikit-learn API.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from balmm.optim import adamw
from balmm.profiling.mi_estimators import resolve_device

PCA_ABOVE = 256  # probes reduce wider inputs to PCA_DIMS components (inside each fold)
PCA_DIMS = 64
CLIP = 10.0  # standardised values are clipped to +-CLIP inside each fold


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
