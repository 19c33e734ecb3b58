"""Mutual information in **bits**: the pair-MI estimators, their intervals, the embedding
widths they get, and label information.

The three estimators of I(Z_a; Z_b) (Gaussian closed form, KSG, InfoNCE; their
biases) live in :mod:`balmm.profiling.mi_estimators`; :func:`estimator_fn` picks one by
name and :func:`pair_dims` says how many dimensions each side gets.

Label information: :func:`label_mi_bits` = H(Y) - CE(held-out probe), a
variational lower bound on I(X; Y).

Intervals: :func:`bootstrap_mi` (half-sampling by default, which keeps kNN
estimators valid: resampling with replacement creates duplicate points at
distance 0, which inflates KSG).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from balmm.errors import ConfigError
from balmm.profiling.mi_estimators import LN2, check_pair, gaussian_mi, infonce_mi, ksg_mi

ESTIMATORS = ("ksg", "gaussian", "infonce")  # names of the pair-MI estimators


def gaussian_mi_true(rho: np.ndarray | list[float]) -> float:
    """True MI (bits) of Gaussian pairs with canonical correlations ``rho``."""
    r = np.asarray(rho, dtype=np.float64)
    return float(-0.5 * np.log1p(-(r**2)).sum() / LN2)


PAIR_DIM_BUDGET = 4  # pair embeddings keep d_a * d_b <= n / PAIR_DIM_BUDGET


def pair_dims(n: int, dims_a: int, dims_b: int) -> tuple[int, int]:
    """Embedding widths for I(Z_a; Z_b) on ``n`` samples: as many as the data support.

    Start from every available dimension of each side (``dims_a``, ``dims_b``: features,
    or the rank ``n - 1`` when smaller) and drop the trailing component of the wider side
    until ``d_a * d_b <= n / 4``. The rule keeps the bias-corrected Gaussian estimate
    stable: its first-order bias ``d_a d_b / (2n)`` nats is subtracted, and at this budget
    the remaining (higher-order) bias measured on independent Gaussian data is at most
    about 0.02 bits from n = 60 to 2000, while 12+12 dimensions at n = 245 leave 0.04
    bits and 24+24 leave 0.18. So ROSMAP's 245 training samples get 7+8 components, BRCA's
    150 get 6+6, 2000 samples get 22+22, and two 6-feature modalities are used whole
    from n = 144 on. KSG is computed on the same embeddings and is biased low there (its
    bias grows with the dimension; docs/profile.md).
    """
    cap = max(1, n - 1)
    da, db = max(1, min(dims_a, cap)), max(1, min(dims_b, cap))
    budget = max(1.0, n / PAIR_DIM_BUDGET)
    while da * db > budget and (da > 1 or db > 1):
        if da >= db:
            da -= 1
        else:
            db -= 1
    return da, db


# --------------------------------------------------------------------------- intervals

MIFn = Callable[[np.ndarray, np.ndarray], float]


def bootstrap_mi(
    fn: MIFn,
    za: np.ndarray,
    zb: np.ndarray,
    n_boot: int = 100,
    seed: int = 0,
    level: float = 0.95,
    resample: str = "half",
) -> tuple[float, tuple[float, float]]:
    """Point estimate ``fn(za, zb)`` and a ``level`` interval from resampling.

    ``resample="half"`` (default) draws ``n_boot`` half-samples without
    replacement. For smooth statistics the half-sample estimate has the same
    variance as the full-sample one, and no duplicate rows appear, so kNN
    estimators stay valid. Estimators are biased differently at ``n/2`` than at
    ``n``, so the interval is the spread of the replicates re-centred on the
    full-sample estimate: ``[est + q_lo - median, est + q_hi - median]``.
    ``resample="bootstrap"`` is the classic with-replacement percentile
    bootstrap (only for estimators that tolerate duplicate rows, e.g. Gaussian).
    """
    a, b = check_pair(za, zb)
    n = a.shape[0]
    est = float(fn(a, b))
    if n_boot <= 0:
        return est, (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        if resample == "half":
            idx = rng.choice(n, size=n // 2, replace=False)
        elif resample == "bootstrap":
            idx = rng.integers(0, n, size=n)
        else:
            raise ValueError(f"resample must be 'half' or 'bootstrap', got {resample!r}")
        reps[i] = fn(a[idx], b[idx])
    alpha = (1 - level) / 2
    q_lo, q_med, q_hi = np.quantile(reps, [alpha, 0.5, 1 - alpha])
    if resample == "half":
        return est, (float(est + q_lo - q_med), float(est + q_hi - q_med))
    return est, (float(q_lo), float(q_hi))


# --------------------------------------------------------------------------- label MI


def entropy_bits(y: np.ndarray, n_classes: int | None = None) -> float:
    """Plug-in entropy H(Y) in bits of integer labels ``y``."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes or 0).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def label_mi_bits(y: np.ndarray, proba: np.ndarray, eps: float = 1e-12) -> float:
    """Variational lower bound on I(X; Y) in bits: H(Y) - CE.

    ``proba`` are **held-out** (e.g. out-of-fold) class probabilities, rows
    matching ``y`` (integer codes = column index). A probe no better than the
    class prior gives ~0; a perfect probe gives H(Y). Negative values (a probe
    worse than the prior) are returned as they are: they mean "no evidence of
    label information".
    """
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"proba must be (n, n_classes) matching y: {p.shape} vs {y.shape}")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError("y must hold class codes 0..n_classes-1")
    ce = -np.log2(np.clip(p[np.arange(len(y)), y], eps, 1.0)).mean()
    return entropy_bits(y, p.shape[1]) - float(ce)


def label_mi_bootstrap(
    y: np.ndarray, proba: np.ndarray, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """:func:`label_mi_bits` with a percentile bootstrap interval over samples."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    est = label_mi_bits(y, p)
    if n_boot <= 0:
        return est, (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    n = len(y)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, size=n)
        reps[i] = label_mi_bits(y[idx], p[idx])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return est, (float(lo), float(hi))


def estimator_fn(name: str, device: str | torch.device | None = None, seed: int = 0) -> MIFn:
    """The pair-MI estimator ``name`` as a function of two embeddings (bits); Gaussian is
    bias-corrected (see :func:`gaussian_mi`). Used by ``balmm profile`` and ``balmm train``."""
    if name == "ksg":
        return lambda a, b: ksg_mi(a, b, k=3, device=device, seed=seed)
    if name == "gaussian":
        return lambda a, b: gaussian_mi(a, b, bias_correct=True)
    if name == "infonce":
        return lambda a, b: infonce_mi(a, b, device=device, seed=seed)
    raise ConfigError(f"unknown MI estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
