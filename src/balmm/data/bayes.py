"""Bayes accuracy of simulated data, from the generative model (not from the samples).

``balmm simulate``'s continuous modalities are, given the class, jointly Gaussian with a
covariance that does not depend on the class (the shared latent couples the
modalities). The Bayes classifier is then linear (LDA with the true parameters) and its
accuracy depends only on the whitened class means: in whitened coordinates the noise is
isotropic, so only its projection on the span of the mean differences (at most
``n_classes - 1`` dimensions) decides. :func:`bayes_accuracy` draws a large Monte-Carlo
sample in that small space (fixed seed: the same parameters give the same number) and
classifies it with the true class-conditional densities and priors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MC_PER_CLASS = 200_000  # Monte-Carlo draws per class: standard error < 0.001


@dataclass
class GaussianBlock:
    """One modality's informative features: ``x = z @ loadings + noise * eps`` with latent
    ``z = [sqrt(r) (A_y + h) | sqrt(1 - r) (B_y + e)]`` (class means ``means``, (C, p))."""

    means: np.ndarray  # (n_classes, p) class means of the informative features
    loadings: np.ndarray  # (2k, p)
    shared: float  # r
    noise: float


def joint_gaussian(blocks: Sequence[GaussianBlock]) -> tuple[np.ndarray, np.ndarray]:
    """Class means (C, sum p) and the common within-class covariance of several blocks.

    Within a block ``Cov(z) = diag(r I_k, (1 - r) I_k)``; across blocks only the shared
    latent ``h`` is common, so ``Cov(z_j, z_l) = sqrt(r_j r_l)`` on the shared half.
    """
    means = np.hstack([b.means for b in blocks])
    k = blocks[0].loadings.shape[0] // 2
    sizes = [b.loadings.shape[1] for b in blocks]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    cov = np.zeros((starts[-1], starts[-1]))
    for i, bi in enumerate(blocks):
        for j, bj in enumerate(blocks):
            if i == j:
                lat = np.diag(np.concatenate([np.full(k, bi.shared), np.full(k, 1 - bi.shared)]))
            else:
                lat = np.zeros((2 * k, 2 * k))
                lat[:k, :k] = np.sqrt(bi.shared * bj.shared) * np.eye(k)
            c = bi.loadings.T @ lat @ bj.loadings
            if i == j:
                c = c + bi.noise**2 * np.eye(sizes[i])
            cov[starts[i] : starts[i + 1], starts[j] : starts[j + 1]] = c
    return means, cov


def bayes_accuracy(means: np.ndarray, cov: np.ndarray, priors: np.ndarray, seed: int = 0) -> float:
    """Accuracy of the Bayes classifier for Gaussian classes ``N(means[c], cov)`` with
    class probabilities ``priors`` (Monte Carlo, deterministic given ``seed``)."""
    means = np.asarray(means, dtype=np.float64)
    priors = np.asarray(priors, dtype=np.float64)
    n_classes = len(priors)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)))
    white = np.linalg.solve(chol, means.T).T  # whitened class means, noise ~ N(0, I)
    diffs = (white[1:] - white[0]).T  # (p, C - 1)
    # orthonormal basis of the span (SVD, not QR: merged classes give zero columns)
    u, sv, _ = np.linalg.svd(diffs, full_matrices=False)
    q = u[:, sv > 1e-10 * max(1.0, float(sv.max(initial=0.0)))]
    centres = white @ q  # (C, r), r <= C - 1
    rng = np.random.default_rng(seed)
    log_prior = np.log(priors)
    correct = 0.0
    for c in range(n_classes):
        u = centres[c] + rng.standard_normal((MC_PER_CLASS, centres.shape[1]))
        score = log_prior - 0.5 * ((u[:, None, :] - centres[None]) ** 2).sum(axis=2)
        correct += priors[c] * float((score.argmax(axis=1) == c).mean())
    return float(correct)


def simulation_bayes(
    blocks: dict[str, GaussianBlock],
    names: list[str],
    present: np.ndarray,
    priors: np.ndarray,
    seed: int,
) -> dict[str, Any] | None:
    """``uns["simulation"]["bayes_accuracy"]``: per modality, all together (``fused``) and
    each sample from the modalities it has (``fused_observed``, its mean over samples;
    ``present`` is samples x modalities). None when a modality is count-like (its
    class-conditional density is not Gaussian)."""
    if len(blocks) != len(names):
        return None

    def acc(subset: Sequence[str]) -> float:
        means, cov = joint_gaussian([blocks[m] for m in subset])
        return bayes_accuracy(means, cov, priors, seed=seed)

    per_mod = {m: acc([m]) for m in names}
    fused = acc(names) if len(names) > 1 else per_mod[names[0]]
    # each sample classified from the modalities it has, averaged over the samples
    patterns, counts = np.unique(present, axis=0, return_counts=True)
    observed = (
        sum(
            c * acc([m for m, has in zip(names, p, strict=True) if has])
            for p, c in zip(patterns, counts, strict=True)
        )
        / counts.sum()
    )
    return {
        "fused": fused,
        "fused_observed": float(observed),
        "modalities": per_mod,
        "method": "true class-conditional Gaussian densities and class proportions, "
        f"Monte Carlo ({MC_PER_CLASS} draws per class, standard error < 0.001)",
    }
