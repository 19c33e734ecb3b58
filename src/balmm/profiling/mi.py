"""Mutual-information estimators, all reporting **bits**.

Three estimators of I(Z_a; Z_b) between two continuous representations
(rows = the same samples, in the same order):

* :func:`gaussian_mi` — closed form under joint Gaussianity via canonical
  correlations, ``-1/2 * sum log(1 - rho_i^2)``. Exact for Gaussian data; it
  sees only linear dependence (zero for a non-linear but uncorrelated pair)
  and is not a bound on the MI of non-Gaussian data in general. Finite-sample
  bias is positive, about ``d_a * d_b / (2 n ln 2)`` bits under independence;
  when ``d_a + d_b`` approaches ``n`` the covariance is shrunk (Ledoit-Wolf),
  which pulls the estimate *down* (towards independence).
* :func:`ksg_mi` — Kraskov-Stögbauer-Grassberger estimator 1 (k nearest
  neighbours, max-norm), implemented in torch so it runs on a GPU, processing
  query rows in chunks so memory stays ``O(chunk * n)``, never ``n x n``.
  Nearly unbiased in low dimension; underestimates large MI in high dimension
  (the bias grows with ``d`` and with the MI itself), and is ~0 (can be slightly
  negative) under independence.
* :func:`infonce_mi` — InfoNCE contrastive lower bound with a small neural critic
  (torch, GPU when available). Never exceeds ``log2(batch_size)`` bits and is
  biased low; useful for large ``n`` and non-linear dependence.

Label information: :func:`label_mi_bits` = H(Y) - CE(held-out probe), a
variational lower bound on I(X; Y).

Intervals: :func:`bootstrap_mi` (half-sampling by default, which keeps kNN
estimators valid: resampling with replacement creates duplicate points at
distance 0, which inflates KSG).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from balmm.errors import ConfigError
from balmm.optim import Adam

LN2 = math.log(2.0)
ESTIMATORS = ("ksg", "gaussian", "infonce")  # names of the pair-MI estimators


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"cpu" -> CPU; "auto" -> CUDA when available, else CPU; else as given."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_2d(z: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().numpy()
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {z.shape}")
    return z


def _check_pair(za, zb) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_2d(za, "za"), _as_2d(zb, "zb")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"za and zb need the same rows (samples): {a.shape[0]} vs {b.shape[0]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("za and zb must be finite (impute missing values first)")
    return a, b


def _standardise(z: np.ndarray) -> np.ndarray:
    sd = z.std(axis=0)
    sd[sd == 0] = 1.0
    return (z - z.mean(axis=0)) / sd


# --------------------------------------------------------------------------- Gaussian


def gaussian_mi(
    za: np.ndarray,
    zb: np.ndarray,
    shrinkage: str | float | None = "auto",
    bias_correct: bool = False,
) -> float:
    """Gaussian (canonical-correlation) MI in bits.

    ``I = 1/2 * (log det S_aa + log det S_bb - log det S)`` on the joint correlation
    matrix ``S``, which equals ``-1/2 * sum_i log(1 - rho_i^2)`` over the canonical
    correlations ``rho_i``.

    Args:
        shrinkage: ``"auto"`` shrinks the joint covariance with Ledoit-Wolf when
            ``d_a + d_b > n / 10`` (where the empirical estimate is unstable and
            biased upwards), ``None`` never shrinks, a float in [0, 1] shrinks
            towards the identity by that amount.
        bias_correct: subtract the estimator's first-order bias under independence,
            ``d_a * d_b / (2 n)`` nats (each squared sample canonical correlation of
            independent variables has mean ~ 1/n), with no automatic shrinkage and no
            clipping of the corrected value at 0, so that independent inputs give
            estimates around 0 whose resampling intervals reach below 0. This is what the
            distillation plan uses: uncorrected, two unrelated 4-dimensional embeddings
            of 245 samples read as 0.05 bits of shared information.
    """
    a, b = _check_pair(za, zb)
    n = a.shape[0]
    if n < 3:
        raise ValueError("gaussian_mi needs at least 3 samples")
    joint = np.hstack([_standardise(a), _standardise(b)])
    d = joint.shape[1]
    if shrinkage == "auto":
        shrinkage = "lw" if d > n / 10 and not bias_correct else None
    if shrinkage == "lw":
        from sklearn.covariance import LedoitWolf

        cov = LedoitWolf(assume_centered=True).fit(joint).covariance_
    else:
        cov = np.cov(joint, rowvar=False).reshape(d, d)
        if shrinkage:
            s = float(shrinkage)
            cov = (1 - s) * cov + s * np.eye(d) * np.trace(cov) / d
    # A tiny ridge keeps log-determinants finite for collinear columns.
    cov = cov + 1e-9 * np.eye(d)
    da = a.shape[1]
    _, ld_a = np.linalg.slogdet(cov[:da, :da])
    _, ld_b = np.linalg.slogdet(cov[da:, da:])
    _, ld = np.linalg.slogdet(cov)
    nats = 0.5 * (ld_a + ld_b - ld)
    bits = max(nats, 0.0) / LN2
    if bias_correct:  # the corrected value is not clipped: independence reads as ~0
        bits -= da * b.shape[1] / (2 * n * LN2)
    return float(bits)


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


# --------------------------------------------------------------------------- KSG


def ksg_mi(
    za: np.ndarray,
    zb: np.ndarray,
    k: int = 3,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    seed: int = 0,
) -> float:
    """KSG (Kraskov et al. 2004, estimator 1) mutual information in bits.

    Each variable is standardised and jittered by 1e-10 (breaks ties in
    discrete-valued data). For every query point, the distance ``eps`` to its
    k-th neighbour in the joint space (max-norm) is found; ``n_a``/``n_b``
    count points strictly closer than ``eps`` in each marginal space, and
    ``I = psi(k) + psi(n) - < psi(n_a + 1) + psi(n_b + 1) >`` (nats -> bits).

    Query rows are processed in chunks, so peak memory is about
    ``3 * chunk_size * n`` floats. ``chunk_size`` defaults to keep that near
    64 MB.
    """
    a, b = _check_pair(za, zb)
    n = a.shape[0]
    if n <= k + 1:
        raise ValueError(f"ksg_mi needs more than k+1={k + 1} samples, got {n}")
    dev = resolve_device(device)
    rng = np.random.default_rng(seed)
    a = _standardise(a) + 1e-10 * rng.standard_normal(a.shape)
    b = _standardise(b) + 1e-10 * rng.standard_normal(b.shape)
    # float64 on CPU (exact tie handling); float32 on GPU for speed.
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    ta = torch.as_tensor(a, dtype=dtype, device=dev)
    tb = torch.as_tensor(b, dtype=dtype, device=dev)
    if chunk_size is None:
        # ~64 MB blocks. Measured on an H100 at n=100k: 8x larger blocks gave the
        # same time (26 s; the O(n^2) distances and top-k dominate) for 8x the memory.
        chunk_size = max(1, min(n, (1 << 23) // n))
    total = torch.zeros((), dtype=torch.float64, device=dev)
    inf = torch.tensor(float("inf"), dtype=dtype, device=dev)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        rows = torch.arange(start, stop, device=dev)
        da = torch.cdist(ta[start:stop], ta, p=float("inf"))
        db = torch.cdist(tb[start:stop], tb, p=float("inf"))
        # Exclude each point from its own neighbourhood.
        da[rows - start, rows] = inf
        db[rows - start, rows] = inf
        joint = torch.maximum(da, db)
        eps = torch.topk(joint, k, dim=1, largest=False).values[:, -1:]
        na = (da < eps).sum(dim=1)
        nb = (db < eps).sum(dim=1)
        total += (
            torch.special.digamma((na + 1).to(torch.float64))
            + torch.special.digamma((nb + 1).to(torch.float64))
        ).sum()
        del da, db, joint
    nats = (
        torch.special.digamma(torch.tensor(float(k), dtype=torch.float64))
        + torch.special.digamma(torch.tensor(float(n), dtype=torch.float64))
        - total.cpu() / n
    )
    return float(nats.item() / LN2)


# --------------------------------------------------------------------------- InfoNCE


class _Critic(torch.nn.Module):
    """Separable critic f(a, b) = <g(a), h(b)> / tau (two small MLPs)."""

    def __init__(self, da: int, db: int, hidden: int, out: int) -> None:
        super().__init__()

        def mlp(d: int) -> torch.nn.Module:
            return torch.nn.Sequential(
                torch.nn.Linear(d, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, out),
            )

        self.g = mlp(da)
        self.h = mlp(db)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.g(a) @ self.h(b).T  # scores[i, j] = f(a_i, b_j)


def _infonce_nats(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE bound log K + mean_i [f_ii - logsumexp_j f_ij] for a K x K score matrix."""
    k = scores.shape[0]
    return math.log(k) + (scores.diag() - torch.logsumexp(scores, dim=1)).mean()


def infonce_mi(
    za: np.ndarray,
    zb: np.ndarray,
    batch_size: int = 256,
    steps: int = 300,
    hidden: int = 64,
    lr: float = 3e-3,
    holdout: float = 0.3,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> float:
    """InfoNCE lower bound on MI, in bits, from a small neural critic.

    The critic is trained on ``1 - holdout`` of the rows and the bound is
    evaluated on the held-out rows (so an over-fitted critic cannot inflate
    it). The estimate can never exceed ``log2(batch_size)`` bits (a property of
    InfoNCE: it is a lower bound that saturates at ``log K``), and it is
    biased low for strongly dependent variables; use it for large ``n`` or
    non-linear dependence, not for precise small-sample values.
    """
    a, b = _check_pair(za, zb)
    n = a.shape[0]
    n_hold = max(2, int(round(n * holdout)))
    if n - n_hold < 4:
        raise ValueError(f"infonce_mi needs more samples, got {n}")
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    ta = torch.as_tensor(_standardise(a), dtype=torch.float32)[perm].to(dev)
    tb = torch.as_tensor(_standardise(b), dtype=torch.float32)[perm].to(dev)
    tr_a, tr_b, ho_a, ho_b = ta[n_hold:], tb[n_hold:], ta[:n_hold], tb[:n_hold]
    n_tr = tr_a.shape[0]
    bs = min(batch_size, n_tr)
    torch.manual_seed(seed)
    critic = _Critic(a.shape[1], b.shape[1], hidden, 32).to(dev)
    opt = Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randperm(n_tr, generator=gen)[:bs].to(dev)
        loss = -_infonce_nats(critic(tr_a[idx], tr_b[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    critic.eval()
    with torch.no_grad():
        bs_eval = min(bs, n_hold)
        vals = []
        for start in range(0, n_hold - bs_eval + 1, bs_eval):
            sl = slice(start, start + bs_eval)
            vals.append(float(_infonce_nats(critic(ho_a[sl], ho_b[sl]))))
    return float(max(np.mean(vals), 0.0) / LN2)


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
    a, b = _check_pair(za, zb)
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
