"""The stateless steps of preprocessing, applied to the training rows of one modality: a
chunked scan of the observed values, count detection, library-size normalisation, log1p
(scanpy) and feature selection (scanpy highly-variable genes, or training variance).
:class:`balmm.data.preprocess.Preprocessor` fits and applies them.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from balmm.data import matrix

COUNT_MIN_MAX = 10.0


def scan_columns(x: object, rows: np.ndarray) -> dict[str, np.ndarray]:
    """One pass over ``rows`` of ``x`` in row chunks: per feature the observed count,
    nan-min, nan-max and whether a non-integer value occurs (sparse chunks stay sparse)."""
    from sklearn.utils.sparsefuncs import min_max_axis

    p = x.shape[1]
    n_obs = np.zeros(p, dtype=np.int64)
    lo = np.full(p, np.inf)
    hi = np.full(p, -np.inf)
    frac = np.zeros(p, dtype=bool)
    for sl in matrix.row_chunks(len(rows), p):
        c = matrix.read_rows(x, rows[sl])
        if sp.issparse(c):
            nan = np.isnan(c.data)
            n_obs += c.shape[0] - np.bincount(c.indices[nan], minlength=p)
            cmin, cmax = min_max_axis(c, axis=0, ignore_nan=True)
            d = c.data[~nan]
            frac |= np.bincount(c.indices[~nan][d != np.round(d)], minlength=p) > 0
        else:
            observed = ~np.isnan(c)
            n_obs += observed.sum(0)
            with np.errstate(all="ignore"):
                cmin = np.nanmin(np.where(observed, c, np.inf), axis=0, initial=np.inf)
                cmax = np.nanmax(np.where(observed, c, -np.inf), axis=0, initial=-np.inf)
            frac |= (observed & (c != np.round(c))).any(0)
        lo = np.fmin(lo, np.asarray(cmin, dtype=np.float64))
        hi = np.fmax(hi, np.asarray(cmax, dtype=np.float64))
    lo[n_obs == 0] = np.nan
    hi[n_obs == 0] = np.nan
    return {"n_obs": n_obs, "min": lo, "max": hi, "non_integer": frac}


def log1p_float64(x: np.ndarray | sp.spmatrix, inplace: bool = False) -> np.ndarray | sp.spmatrix:
    """scanpy's log1p in float64 (sparse stays sparse; NaN stays NaN).

    ``x`` is left untouched (the log is taken on one float64 copy, C-ordered when dense: the
    layout decides the summation order of later statistics) unless ``inplace``, which needs
    a plain float64 ``np.ndarray`` that the caller owns.
    """
    if not inplace:
        if sp.issparse(x):
            x = x.astype(np.float64, copy=True)
        else:
            x = np.array(x, dtype=np.float64, order="C")
    import scanpy as sc  # here, not at the top: importing scanpy costs seconds

    return sc.pp.log1p(x, copy=False)


def library_size(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Per-row total over every feature, missing values ignored (float64). Summed over the
    dense row in either case, so sparse and dense input give the same bits."""
    out = np.zeros(x.shape[0], dtype=np.float64)
    for sl in matrix.row_chunks(x.shape[0], x.shape[1]):
        c = x[sl]
        c = c.toarray() if sp.issparse(c) else np.asarray(c)
        out[sl] = np.nansum(c, axis=1, dtype=np.float64)
    return out


def library_sizes(x: object, rows: np.ndarray) -> np.ndarray:
    """:func:`library_size` of ``rows`` of ``x`` (in memory or on disk), read in chunks."""
    out = np.zeros(len(rows), dtype=np.float64)
    for sl in matrix.row_chunks(len(rows), x.shape[1]):
        out[sl] = library_size(matrix.read_rows(x, rows[sl]))
    return out


def normalise_total(
    x: np.ndarray | sp.spmatrix, size: np.ndarray, target_sum: float
) -> np.ndarray | sp.spmatrix:
    """Rows of ``x`` scaled to ``target_sum`` given their library ``size`` (computed over
    every feature of the row, as scanpy's ``normalize_total`` does, although only the
    kept features are scaled here); empty rows stay 0. float64 copy."""
    factor = np.divide(target_sum, size, out=np.zeros_like(size), where=size > 0)
    if sp.issparse(x):
        return sp.csr_matrix(sp.diags(factor) @ sp.csr_matrix(x, dtype=np.float64))
    return np.asarray(x, dtype=np.float64) * factor[:, None]


def is_count_like(x: np.ndarray | sp.spmatrix) -> bool:
    """All observed values are non-negative integers and the largest is >= COUNT_MIN_MAX."""
    vals = x.data if sp.issparse(x) else np.asarray(x).ravel()
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return False
    return bool(vals.min() >= 0 and np.all(vals == np.round(vals)) and vals.max() >= COUNT_MIN_MAX)


def select_features(
    reader: matrix.ColumnReader,
    var_names: pd.Index,
    k: int,
    is_count: bool,
    v3: bool,
    size: np.ndarray | None,
    target_sum: float | None,
) -> np.ndarray:
    """Positions (in ``var_names``) of the ``k`` kept features, in input order: scanpy
    highly-variable genes for counts (``seurat_v3`` on raw counts when ``v3``), the highest
    training variance otherwise."""
    n_rows, n_cols = len(reader.rows), len(var_names)
    blocks = matrix.column_blocks(n_cols, n_rows)
    if not is_count:
        var = np.zeros(n_cols)
        for blk in blocks:  # training variance per feature, missing values ignored
            var[blk] = np.nanvar(reader.block(blk).astype(np.float64), axis=0)
        return np.sort(np.argsort(-var, kind="stable")[:k])
    # HVG on a sparse copy of the kept columns (dense count input too: scanpy's sparse
    # and dense statistics differ in their last bits, so one format for both); missing
    # values get the feature's training median first, as HVG needs complete data
    parts = []
    for blk in blocks:
        xb = reader.block(blk).astype(np.float64)
        if not v3:
            xb = log1p_float64(normalise_total(xb, size, target_sum), inplace=True)
        gaps = np.isnan(xb)
        if gaps.any():
            med = np.nan_to_num(np.nanmedian(xb, axis=0))
            xb[gaps] = med[np.nonzero(gaps)[1]]
        parts.append(sp.csc_matrix(xb))
    tmp = ad.AnnData(X=sp.hstack(parts, format="csr"))
    del parts
    tmp.var_names = var_names.astype(str)
    import scanpy as sc

    if v3:
        hvg = sc.pp.highly_variable_genes(tmp, n_top_genes=k, flavor="seurat_v3", inplace=False)
        rank = hvg["highly_variable_rank"].to_numpy(dtype=np.float64)
        order = np.argsort(np.nan_to_num(rank, nan=np.inf), kind="stable")[:k]
    else:
        hvg = sc.pp.highly_variable_genes(tmp, n_top_genes=k, flavor="seurat", inplace=False)
        disp = hvg["dispersions_norm"].to_numpy(dtype=np.float64)
        order = np.argsort(-np.nan_to_num(disp, nan=-np.inf), kind="stable")[:k]
    return np.sort(order)
