"""Markers: per modality and class, the features that drive a trained model's predictions,
with how stable that ranking is across cross-validation folds and a held-out check.

For each modality the unimodal pathway of the trained model (its encoder and its head,
whose logits the fusion combines) is explained on the training samples:

- **score** of feature j for class c: the gradient of the class's centred logit with
  respect to the feature, averaged along the integrated-gradients path from the
  training mean (the preprocessed zero) to each sample and over samples, times the
  feature's sd. For the ``linear`` encoder the gradient is the same everywhere, so the
  score is exactly the per-class effective weight (head weight x encoder weight) x feature
  sd, on the scale of the original feature's variation; for ``mlp`` it is the
  integrated-gradients attribution per unit of sd. Positive: raising the feature pushes a
  sample towards the class.
- **stability**: the same pathway trained on each of K stratified folds' training part
  (the run's own cross-fitting fold models when it cross-fitted with K folds; otherwise
  retrained from scratch); the fraction of folds whose top ``top`` features for the class
  include the feature (with a positive score).
- **permutation importance**: on each fold's held-out part, the mean rise in log-loss
  (scikit-learn's permutation_importance) when the feature is shuffled, averaged over
  folds; it checks the score on samples the fold model never saw.

The test split is not used.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from balmm.errors import InputError
from balmm.optim import Adam
from balmm.threads import scoped_threads

if TYPE_CHECKING:
    from balmm.data.dataset import MultiOmicsData

COLUMNS = [
    "modality",
    "class",
    "rank",
    "feature",
    "score",
    "stability",
    "permutation_importance",
    "method",
]
IG_STEPS = 16
FOLD_STEPS = 100
# rows per refit step: on 1,600-row folds of 2,000 features the whole fold per step took
# 42 s for three modalities (dropout sampling, mostly) and 512 rows 16 s, with stability
# values that correlate 0.87 with the whole fold's (another markers seed: 0.12)
FOLD_ROWS = 512


class _Pathway(nn.Module):
    """One modality's encoder followed by its head: features -> class logits."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


# markers are computed on at most this many training samples (a stratified subsample)
MAX_SAMPLES = 2000


def path_gradients(net: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """(classes, features): d centred-logit_c / d x_j averaged over the straight path from 0
    to each row of ``x`` (integrated gradients' path integral) and over the rows."""
    net.eval()
    alphas = torch.arange(1, steps + 1, dtype=x.dtype) / steps  # right Riemann sum
    n_classes = net(x[:1]).shape[1]
    out = torch.zeros(n_classes, x.shape[1], dtype=torch.float64)
    for c in range(n_classes):
        total = torch.zeros(x.shape[1], dtype=torch.float64)
        for a in alphas:
            xa = (a * x).detach().requires_grad_(True)
            logits = net(xa)
            centred = logits[:, c] - logits.mean(1)
            (grad,) = torch.autograd.grad(centred.sum(), xa)
            total += grad.double().sum(0)
        out[c] = total / (steps * len(x))
    return out


def _scores(net: nn.Module, x: np.ndarray, sd: np.ndarray, steps: int) -> np.ndarray:
    g = path_gradients(net, torch.as_tensor(x, dtype=torch.float32), steps).numpy()
    return g * sd[None, :]


def _fresh(pathway: _Pathway, seed: int) -> _Pathway:
    """A copy of ``pathway`` with every layer re-initialised (seeded)."""
    net = copy.deepcopy(pathway)
    torch.manual_seed(seed)
    for mod in net.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    return net


def _fit(net: _Pathway, x: np.ndarray, y: np.ndarray, cfg, seed: int) -> _Pathway:
    """Train ``net`` on cross-entropy with the run's weight decay: :data:`FOLD_STEPS` Adam
    steps on minibatches of at most :data:`FOLD_ROWS` rows of the fold, at 10x the run's
    learning rate to make up for the fewer, larger steps."""
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    opt = Adam(net.parameters(), lr=10 * cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(len(xt), FOLD_ROWS)
    net.train()
    for _ in range(FOLD_STEPS):
        rows = torch.randperm(len(xt), generator=gen)[:batch]
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt[rows]), yt[rows]).backward()
        opt.step()
    return net.eval()


def _crossfit_fold_of(result: Any, ids: pd.Index) -> np.ndarray | None:
    """Each sample's cross-fitting fold in the run (None when the run did not cross-fit or
    a sample is not one of its training samples)."""
    folds = getattr(result, "crossfit_folds", None)
    if folds is None or not ids.isin(folds.index).all():
        return None
    return folds.loc[ids].to_numpy()


def _crossfit_models(result: Any, pathway: _Pathway, m: str, n_folds: int) -> list | None:
    """The run's cross-fitting fold models of modality ``m`` as pathways (the unimodal
    encoder and head trained without each fold), or None to retrain instead."""
    states = getattr(result, "crossfit_states", None) or []
    if len(states) != n_folds or any(m not in st for st in states):
        return None
    nets = []
    for st in states:
        net = copy.deepcopy(pathway)
        net.encoder.load_state_dict(st[m]["encoder"])
        net.head.load_state_dict(st[m]["head"])
        nets.append(net.eval())
    return nets


class _Scorer:
    """A fitted pathway as scikit-learn sees a classifier, over a few candidate columns of a
    fixed matrix (so that permutation_importance shuffles only those)."""

    _estimator_type = "classifier"

    def __init__(self, net: nn.Module, base: np.ndarray, cols: np.ndarray, n_classes: int):
        self.net, self.base, self.cols = net, base, cols
        self.classes_ = np.arange(n_classes)

    def fit(self, *args: Any) -> _Scorer:
        return self

    def predict_proba(self, xc: np.ndarray) -> np.ndarray:
        x = self.base.copy()
        x[:, self.cols] = xc
        with torch.no_grad():
            logits = self.net(torch.as_tensor(x, dtype=torch.float32))
        p = torch.softmax(logits.double(), 1).numpy()
        return p / p.sum(1, keepdims=True)  # exactly 1 in float64 (sklearn checks)

    def predict(self, xc: np.ndarray) -> np.ndarray:
        return self.predict_proba(xc).argmax(1)


def _log_loss_rise(
    net, x: np.ndarray, y: np.ndarray, cols: np.ndarray, n_classes: int, seed: int
) -> np.ndarray:
    from sklearn.inspection import permutation_importance

    est = _Scorer(net, x, cols, n_classes)
    rows = np.arange(len(y))

    def neg_log_loss(estimator, xc, yc) -> float:
        # the log-likelihood of the true classes (sklearn's log_loss re-validates its
        # inputs on every call, 10x the cost of the forward pass here)
        p = estimator.predict_proba(xc)[rows, yc]
        return float(np.log(np.clip(p, 1e-15, None)).mean())

    res = permutation_importance(
        est, x[:, cols], y, scoring=neg_log_loss, n_repeats=3, random_state=seed
    )
    return res.importances_mean


def markers(
    result: Any,
    data: MultiOmicsData,
    *,
    top: int = 20,
    n_folds: int | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Per modality and class, the ``top`` features by score, with stability across
    ``n_folds`` fold models (the run's cross-fitting models when it has ``n_folds`` of them,
    else refits; None: as many as the run's cross-fitting folds, or 5 when it did not
    cross-fit) and held-out permutation importance (columns: :data:`COLUMNS`).

    ``result``: a TrainResult of a ``linear`` or ``mlp`` run (``balmm.train``); ``data``:
    the data it was trained on (only its training split is used).
    """
    # one thread: the matrices are small, and extra threads on a busy machine make each of
    # the many small steps several times slower
    with scoped_threads(1):
        return _markers(result, data, top, n_folds, seed)


def marker_samples(data: MultiOmicsData, seed: int) -> pd.Index:
    """The training samples markers are computed on: every one, or above
    :data:`MAX_SAMPLES` a stratified subsample of that many (thousands of samples rank
    features; millions only cost)."""
    train_ids = data.ids("train")
    if len(train_ids) > MAX_SAMPLES:
        from balmm.data.splits import stratified_subsample

        keep = stratified_subsample(len(train_ids), data.y(train_ids), MAX_SAMPLES, seed)
        train_ids = train_ids[keep]
    return train_ids


def _markers(
    result: Any, data: MultiOmicsData, top: int, n_folds: int | None, seed: int | None
) -> pd.DataFrame:
    from sklearn.model_selection import StratifiedKFold

    if n_folds is None:  # the run's own fold models: no refits
        n_folds = len(getattr(result, "crossfit_states", None) or []) or 5

    model, pre, cfg = result.model, result.preprocessor, result.config
    if model is None or pre is None:
        raise InputError("markers need a trained model with its preprocessing (a TrainResult)")
    if model.early_fusion or model.encoder_kind not in ("linear", "mlp"):
        kind = "concat (early fusion)" if model.early_fusion else model.encoder_kind
        raise InputError(f"markers need per-modality linear or mlp encoders, not {kind}")
    seed = cfg.seed if seed is None else seed
    classes = list(result.metrics["classes"])
    mapping = getattr(result, "label_mapping", None) or {}
    proc = pre.transform(data, marker_samples(data, seed))
    fold_of = _crossfit_fold_of(result, proc.ids)
    steps = 1 if model.encoder_kind == "linear" else IG_STEPS  # linear: exact with one step
    method = "effective weight x sd" if steps == 1 else "integrated gradients x sd"
    frames = []
    for m in model.modalities:
        rows = proc.mask[m] & (proc.y >= 0)
        x = np.asarray(proc.X[m][rows], dtype=np.float32)
        y = proc.y[rows]
        feats = np.asarray(pre.features[m])
        if len(x) < 2 * n_folds or np.bincount(y).min(initial=len(y)) < n_folds:
            continue  # too few samples of a class for the folds
        sd = x.std(0).astype(np.float64)
        pathway = _Pathway(model.encoders[m], model.heads[m])
        score = _scores(copy.deepcopy(pathway), x, sd, steps)  # (classes, features)
        k = min(top, x.shape[1])
        cand = np.unique(np.argsort(-score, axis=1)[:, :k])  # every class's top features
        hits = np.zeros_like(score)
        perm = np.zeros(len(cand))
        n_perm = 0
        fold_models = _crossfit_models(result, pathway, m, n_folds)
        if fold_models is not None and fold_of is not None:
            fr = fold_of[rows]
            folds = [(np.flatnonzero(fr != f), np.flatnonzero(fr == f)) for f in range(n_folds)]
        else:
            fold_models = None
            folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y))
        for f, (tr, te) in enumerate(folds):
            if fold_models is not None:
                net = fold_models[f]
            else:
                net = _fit(_fresh(pathway, seed + f), x[tr], y[tr], cfg, seed + f)
            fs = _scores(net, x[tr], sd, steps)
            for c in range(len(classes)):
                top_f = np.argsort(-fs[c])[:k]
                hits[c, top_f] += fs[c, top_f] > 0
            if len(te):
                perm += _log_loss_rise(net, x[te], y[te], cand, len(classes), seed + f)
                n_perm += 1
        perm_of = dict(zip(cand.tolist(), (perm / max(n_perm, 1)).tolist(), strict=True))
        for c, code in enumerate(classes):
            order = np.argsort(-score[c])[:k]
            frames.append(pd.DataFrame({
                "modality": m,
                "class": str(mapping.get(code, code)),
                "rank": np.arange(1, len(order) + 1),
                "feature": feats[order],
                "score": score[c, order],
                "stability": hits[c, order] / n_folds,
                "permutation_importance": [perm_of[j] for j in order.tolist()],
                "method": method,
            }))  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]
