"""Per-modality data quality: what the raw matrix looks like before any model sees it.

All figures are label-free and computed on the raw values of the samples that
have the modality (the PCA-based ones on a stated random subsample above
``max_samples``).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp
from scipy.stats import chi2, median_abs_deviation
from sklearn.decomposition import PCA

NEAR_CONSTANT_REL = 1e-3  # feature std below this fraction of the median feature std


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def modality_quality(
    adata: ad.AnnData,
    n_union: int,
    max_samples: int = 2000,
    seed: int = 0,
) -> dict:
    """Quality figures of one modality (see docs/profile.md for each field).

    Args:
        adata: the modality (rows = samples that have it, raw values, NaN = missing).
        n_union: number of samples in the whole dataset (for ``coverage``).
        max_samples: PCA / robust-distance figures use at most this many rows.
    """
    n, d = adata.shape
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=max_samples, replace=False)) if n > max_samples else None
    x = _dense(adata.X if rows is None else adata.X[rows])
    finite = np.isfinite(x)
    vals = x[finite]
    missing = float(1 - finite.mean()) if x.size else 0.0
    nonneg = bool(vals.size and vals.min() >= 0)
    integer_frac = float(np.mean(np.equal(np.round(vals), vals))) if vals.size else 0.0
    count_like = bool(nonneg and integer_frac >= 0.99 and vals.size and vals.max() > 1)
    absval = np.abs(vals[vals != 0])
    if absval.size:
        lo, hi = np.quantile(absval, [0.001, 0.999])
        dyn = float(np.log10(hi / lo)) if lo > 0 else float("nan")
    else:
        dyn = float("nan")

    # Column-mean imputation only for the descriptive PCA below.
    col_mean = np.nanmean(np.where(finite, x, np.nan), axis=0)
    col_mean = np.where(np.isfinite(col_mean), col_mean, 0.0)
    xi = np.where(finite, x, col_mean)
    if count_like:
        xi = np.log1p(xi)  # counts: variance is dominated by a few huge features otherwise
    sd = xi.std(axis=0)
    med_sd = float(np.median(sd)) if sd.size else 0.0
    near_const = float(np.mean(sd <= NEAR_CONSTANT_REL * med_sd)) if med_sd > 0 else 1.0

    eff_dim: float = float("nan")
    n_out, out_frac, out_ids = 0, 0.0, []
    keep = sd > 0
    m = xi.shape[0]
    if keep.sum() >= 2 and m >= 5:
        z = (xi[:, keep] - xi[:, keep].mean(axis=0)) / sd[keep]
        n_comp = int(min(m - 1, z.shape[1], 200))
        pca = PCA(n_components=n_comp, random_state=seed).fit(z)
        # Variance of the full standardised matrix = number of kept features.
        cum = np.cumsum(pca.explained_variance_) / z.var(axis=0).sum()
        eff_dim = float(np.searchsorted(cum, 0.9) + 1) if cum[-1] >= 0.9 else float(n_comp)
        # Robust scales need many rows per dimension: at most m / 25 components.
        k = int(min(max(2, eff_dim), 10, max(2, m // 25)))
        scores = pca.transform(z)[:, :k]
        if m > 2 * k + 2:
            # Robust distance from per-component median / MAD. Not a minimum
            # covariance determinant fit: MCD models the tightest half of the
            # samples, and with biological subgroups (e.g. BRCA subtypes) it flagged
            # whole minority subtypes (27% of samples) as outliers.
            med = np.median(scores, axis=0)
            mad = median_abs_deviation(scores, axis=0, scale="normal")
            mad = np.where(mad > 0, mad, scores.std(axis=0) + 1e-12)
            d2 = (((scores - med) / mad) ** 2).sum(axis=1)
            # Real omics are heavier-tailed than Gaussian: rescale so the median
            # robust distance matches the chi2 median before applying the 99.9% cut.
            cut = chi2.ppf(0.999, df=k) * max(1.0, float(np.median(d2)) / chi2.ppf(0.5, df=k))
            flag = d2 > cut
            names = np.asarray(adata.obs_names if rows is None else adata.obs_names[rows])
            n_out = int(flag.sum())
            out_frac = float(flag.mean())
            order = np.argsort(-d2)
            out_ids = [str(names[i]) for i in order[: min(10, n_out)]]

    return {
        "n_samples": int(n),
        "n_features": int(d),
        "coverage": float(n / n_union) if n_union else 0.0,
        "missing_fraction": missing,
        "zero_fraction": float(np.mean(vals == 0)) if vals.size else 0.0,
        "nonnegative": nonneg,
        "integer_fraction": integer_frac,
        "count_like": count_like,
        "value_min": float(vals.min()) if vals.size else float("nan"),
        "value_max": float(vals.max()) if vals.size else float("nan"),
        "dynamic_range_log10": dyn,
        "near_constant_fraction": near_const,
        "effective_dim_90": eff_dim,
        "n_outlier_samples": n_out,
        "outlier_fraction": out_frac,
        "outlier_samples": out_ids,
        "quality_rows_used": int(m),
    }
