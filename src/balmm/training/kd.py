"""Stage 1 helpers: the inputs of the distillation plan and the distillation loss.

The plan itself is :func:`balmm.profiling.plan.distillation_plan` (the same
function ``balmm profile`` uses); this module only measures what it needs on the
unimodal models of stage 1:

- strength: each unimodal model's validation macro-F1 with a bootstrap lower bound;
- label information I(X_m; Y): a cross-validated logistic-regression probe on the
  training split, H(Y) - CE in bits with a bootstrap interval (as in ``profile``);
- I(Z_t; Z_s): MI between the unimodal encoders' embeddings (reduced to a few
  principal components so the estimator is stable at omics sample sizes) on the
  training samples measured in both modalities, with a half-sample interval.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from balmm.data.splits import stratified_subsample
from balmm.profiling import mi as mi_mod

logger = logging.getLogger("balmm")


def kd_loss(
    student_logits: torch.Tensor,
    y: torch.Tensor,
    teachers: list[tuple[torch.Tensor, torch.Tensor, float]],
    alpha: float,
    temperature: float,
    student_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(1 - alpha) CE(y, s) + alpha T^2 sum_k w_k KL(softmax(t_k/T) || softmax(s/T)).

    ``teachers`` holds (teacher logits, teacher presence mask, weight) per teacher;
    per sample the weights are renormalised over the teachers it was measured in,
    and a sample with no teacher gets the plain cross-entropy.
    """
    ce = F.cross_entropy(student_logits, y, reduction="none")
    if not teachers:
        kl_term = torch.zeros_like(ce)
        have = torch.zeros_like(ce)
    else:
        log_s = F.log_softmax(student_logits / temperature, dim=1)
        num = torch.zeros_like(ce)
        wsum = torch.zeros_like(ce)
        for t_logits, t_mask, w in teachers:
            p_t = F.softmax(t_logits / temperature, dim=1)
            kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - log_s)).sum(dim=1)
            wm = w * t_mask.to(ce.dtype)
            num = num + wm * kl
            wsum = wsum + wm
        have = (wsum > 0).to(ce.dtype)
        kl_term = num / wsum.clamp_min(1e-12)
    per = (1 - alpha * have) * ce + alpha * have * temperature**2 * kl_term
    if student_mask is None:
        return per.mean()
    m = student_mask.to(per.dtype)
    return (per * m).sum() / m.sum().clamp_min(1.0)


PROBE_MAX = 5000  # samples a label-MI probe fits on (enough for bits-level MI)
# samples a pair MI is estimated on: its PCA and bootstrap on 700,000 single-cell
# embeddings held gigabytes; 20,000 pin I(Z_a; Z_b) to a few hundredths of a bit
PAIR_MI_MAX = 20_000


def label_mi_probe(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    n_boot: int,
    seed: int,
    max_samples: int = PROBE_MAX,
) -> tuple[float, float, float]:
    """I(X; Y) in bits from out-of-fold logistic-regression probabilities:
    (estimate, lower, upper) of a 95% bootstrap interval."""
    keep = stratified_subsample(len(y), y, max_samples, seed)  # enough for bits-level MI
    x, y = x[keep], y[keep]
    counts = np.bincount(y, minlength=n_classes)
    folds = int(min(5, counts[counts > 0].min())) if len(y) else 0
    if folds < 2 or (counts > 0).sum() < 2:
        return float("nan"), float("nan"), float("nan")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # A calibrated probe makes H(Y) - CE a useful bound (an over-confident one drives it
    # below zero), so the ridge strength is the one with the lowest out-of-fold log-loss
    # (a max over 3 values: slightly optimistic, stated in docs/method.md).
    best = None
    for c in (1e-3, 1e-2, 1e-1):
        p = cross_val_predict(LogisticRegression(C=c, max_iter=1000), x, y, cv=cv,
                              method="predict_proba")  # fmt: skip
        ce = -np.log(np.clip(p[np.arange(len(y)), np.searchsorted(np.unique(y), y)], 1e-12, 1))
        if best is None or ce.mean() < best[0]:
            best = (ce.mean(), p)
    proba = best[1]
    full = np.zeros((len(y), n_classes))
    full[:, np.unique(y)] = proba
    est, (lo, hi) = mi_mod.label_mi_bootstrap(y, full, n_boot=n_boot, seed=seed)
    return float(est), float(lo), float(hi)


def pair_mi(
    za: np.ndarray, zb: np.ndarray, estimator: str, dims: int, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """I(Z_a; Z_b) in bits between two embeddings of the same samples, on their leading
    principal components: ``dims`` each, or (``dims`` 0) as many as the sample size
    supports (:func:`balmm.profiling.mi.pair_dims`, the rule ``balmm profile`` uses).
    Above ``PAIR_MI_MAX`` samples, on a seeded random subsample of that many."""
    if za.shape[0] > PAIR_MI_MAX:
        rows = np.sort(np.random.default_rng(seed).choice(za.shape[0], PAIR_MI_MAX, replace=False))
        za, zb = za[rows], zb[rows]
    n = za.shape[0]
    if n < 10:
        return float("nan"), float("nan"), float("nan")
    if dims > 0:
        da = db = dims
    else:
        da, db = mi_mod.pair_dims(n, za.shape[1], zb.shape[1])

    def reduce(z: np.ndarray, d: int) -> np.ndarray:
        k = max(1, min(d, z.shape[1], n - 2))
        if np.allclose(z.std(axis=0), 0):
            return z[:, :k]
        return PCA(n_components=k, random_state=seed).fit_transform(z)

    a, b = reduce(za, da), reduce(zb, db)
    fn = mi_mod.estimator_fn(estimator)  # Gaussian bias-corrected, as in ``balmm profile``
    # half-samples re-centred on the estimate, as in profile: with-replacement resamples
    # duplicate rows, which shrinks the effective n and inflates both estimators
    est, (lo, hi) = mi_mod.bootstrap_mi(fn, a, b, n_boot=n_boot, seed=seed, resample="half")
    return float(est), float(lo), float(hi)
