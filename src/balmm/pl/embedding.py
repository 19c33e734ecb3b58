"""A UMAP (or PCA) of the fused embedding coloured by label, drawn by scanpy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from balmm.errors import InputError
from balmm.pl._common import class_names, new_axes, output_file

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.axes import Axes


def _adata(obj: Any, use_rep: str) -> ad.AnnData:
    import anndata as ad

    if isinstance(obj, ad.AnnData):
        return obj
    if hasattr(obj, "mod") and hasattr(obj, "obsm"):  # a MuData: its .obs and the embedding
        if use_rep not in obj.obsm:
            raise InputError(f"embedding {use_rep!r} not in the MuData's .obsm")
        return ad.AnnData(obs=obj.obs.copy(), obsm={use_rep: np.asarray(obj.obsm[use_rep])})
    if hasattr(obj, "embeddings") and isinstance(obj.embeddings, ad.AnnData):
        return obj.embeddings
    if isinstance(obj, (str, Path)):
        return ad.read_h5ad(output_file(obj, "embeddings.h5ad", "a train output folder"))
    raise TypeError(f"expected a TrainResult, an AnnData or a path, not {type(obj).__name__}")


# scanpy computes neighbours exactly below this many samples, with pynndescent above it
# (scanpy 1.11's rule for euclidean distances)
EXACT_KNN_MAX = 8192


def _knn_transformer(n_obs: int, n_neighbors: int, seed: int) -> Any:
    """None (scanpy's exact kNN) below :data:`EXACT_KNN_MAX` samples; above, the
    pynndescent transformer scanpy itself would build, returning a scipy ``csr_matrix``:
    pynndescent 0.7 returns a ``csr_array``, whose missing ``getnnz`` made scanpy 1.11's
    neighbours fail (every ``train`` report of 8192 samples or more)."""
    if n_obs < EXACT_KNN_MAX:
        return None
    import scanpy as sc
    import scipy.sparse as sp
    from pynndescent import PyNNDescentTransformer

    class CsrMatrixKnn(PyNNDescentTransformer):
        def fit_transform(self, X, y=None, **kwargs):
            return sp.csr_matrix(super().fit_transform(X, y, **kwargs))

        def transform(self, X):
            return sp.csr_matrix(super().transform(X))

    # the settings of scanpy's own default (UMAP's nearest_neighbors defaults)
    return CsrMatrixKnn(n_neighbors=n_neighbors, metric="euclidean", metric_kwds={},
                        random_state=seed, n_jobs=sc.settings.n_jobs,
                        n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
                        n_iters=max(5, round(np.log2(n_obs))))  # fmt: skip


def umap_coordinates(
    adata: ad.AnnData, *, use_rep: str = "X_fused", n_neighbors: int = 15, seed: int = 0
) -> ad.AnnData:
    """A light copy of ``adata`` with scanpy's neighbour graph and UMAP of ``use_rep``
    (``obsm["X_umap"]``); the input is left untouched."""
    import scanpy as sc

    if use_rep not in adata.obsm:
        have = ", ".join(adata.obsm) or "none"
        raise InputError(f"embedding {use_rep!r} not in .obsm (present: {have})")
    out = adata.copy()
    n_neighbors = max(2, min(n_neighbors, out.n_obs - 1))
    sc.pp.neighbors(out, use_rep=use_rep, n_neighbors=n_neighbors, random_state=seed,
                    transformer=_knn_transformer(out.n_obs, n_neighbors, seed))  # fmt: skip
    sc.tl.umap(out, random_state=seed)
    return out


def pca_coordinates(adata: ad.AnnData, *, use_rep: str = "X_fused") -> ad.AnnData:
    """A light copy of ``adata`` with the first two principal components of ``use_rep``
    (``obsm["X_pca"]``; scikit-learn's PCA, deterministic); the input is left untouched."""
    from sklearn.decomposition import PCA

    if use_rep not in adata.obsm:
        have = ", ".join(adata.obsm) or "none"
        raise InputError(f"embedding {use_rep!r} not in .obsm (present: {have})")
    out = adata.copy()
    x = np.asarray(out.obsm[use_rep], dtype=np.float64)
    out.obsm["X_pca"] = PCA(n_components=min(2, *x.shape), svd_solver="full").fit_transform(x)
    return out


def embedding(
    result: Any,
    *,
    color: str = "label",
    use_rep: str = "X_fused",
    basis: str = "umap",
    seed: int = 0,
    ax: Axes | None = None,
) -> Axes:
    """UMAP of an embedding (default: the fused one) coloured by ``color`` (an ``.obs``
    column: ``label``, ``predicted``, ``split``, ...).

    ``result``: a TrainResult, a ``train --out`` folder, embeddings.h5ad, or an AnnData or
    MuData holding ``use_rep`` in ``.obsm`` (e.g. ``mdata`` after ``balmm.tl.train``, with
    ``use_rep="X_balmm"`` and ``color`` one of its ``.obs`` columns). scanpy computes the
    neighbours and the UMAP (seeded) unless ``.obsm["X_umap"]`` is already there;
    ``basis="pca"`` draws the first two principal components instead (fast: no numba
    compilation). Class codes are shown by their names.
    """
    import scanpy as sc

    src = _adata(result, use_rep)
    if basis not in ("umap", "pca"):
        raise InputError(f"basis must be 'umap' or 'pca', not {basis!r}")
    key = f"X_{basis}"
    if key in src.obsm:
        adata = src
    elif basis == "umap":
        adata = umap_coordinates(src, use_rep=use_rep, seed=seed)
    else:
        adata = pca_coordinates(src, use_rep=use_rep)
    if color in adata.obs and hasattr(adata.obs[color], "cat"):
        cats = list(adata.obs[color].cat.categories.astype(str))
        names = class_names(result, cats)
        if names != cats and len(set(names)) == len(names):
            adata = src.copy() if adata is src else adata
            adata.obs[color] = adata.obs[color].cat.rename_categories(names)
    ax = new_axes(ax, (5.8, 4.6))
    sc.pl.embedding(
        adata,
        basis=basis,
        color=color,
        ax=ax,
        show=False,
        frameon=False,
        title=f"{basis.upper()} of {use_rep} coloured by {color}",
    )
    return ax
