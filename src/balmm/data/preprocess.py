"""Per-modality preprocessing fitted on training samples only.

Steps per modality, all statistics from the training rows:

1. drop features that are all-missing or constant;
2. count-like modalities (every observed value is a non-negative integer and the
   maximum is at least ``COUNT_MIN_MAX``, so binary mutation calls or GISTIC levels are
   not mistaken for counts): library-size normalisation to the median training library
   size (scanpy ``normalize_total``'s rule, with the target fixed at fit time), then
   ``log1p`` (scanpy);
3. impute missing values with the training median (scikit-learn ``SimpleImputer``);
4. keep at most ``max_features`` features: scanpy highly-variable genes for counts
   (``seurat_v3`` on the raw counts when they were read from a layer, e.g.
   ``layer="counts"``; else ``seurat`` on the normalised log values), the highest
   training variance otherwise;
5. standardise (scikit-learn ``StandardScaler``) and clip to ``[-clip, clip]``.

The fitted state is plain JSON + npz so a model bundle can carry it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from balmm.data.dataset import LABEL, MultiOmicsData
from balmm.errors import InputError

logger = logging.getLogger("balmm")

COUNT_MIN_MAX = 10.0
CHUNK_ROWS = 8192
STATE_JSON = "preprocess.json"
STATE_NPZ = "preprocess.npz"


@dataclass
class ProcessedData:
    """Model-ready arrays for a set of samples.

    ``X[m]`` is float32 ``len(ids) x n_features_m``; rows of samples lacking modality m
    are 0 and ``mask[m]`` is False there. ``y`` holds class codes (-1 = unknown).
    """

    ids: pd.Index
    X: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]
    y: np.ndarray
    classes: list[str]


@dataclass
class _ModState:
    features: list[str]  # kept features, in output order
    is_count: bool
    median: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    info: dict = field(default_factory=dict)
    # counts: library sizes are scaled to this (None: no normalisation, e.g. older bundles)
    target_sum: float | None = None


def _rows(adata: ad.AnnData, ids: pd.Index) -> ad.AnnData:
    return adata[adata.obs_names.isin(ids)]


def _dense(x: np.ndarray | sp.spmatrix, dtype: type = np.float64) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=dtype)


def _nan_stats(x: np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature (observed count, nan-min, nan-max) without densifying sparse input."""
    if sp.issparse(x):
        from sklearn.utils.sparsefuncs import min_max_axis

        x = sp.csr_matrix(x)  # CSR: .indices are column numbers
        n = x.shape[0] - np.bincount(x.indices[np.isnan(x.data)], minlength=x.shape[1])
        xmin, xmax = min_max_axis(x, axis=0, ignore_nan=True)
        return n, np.asarray(xmin, dtype=np.float64), np.asarray(xmax, dtype=np.float64)
    observed = ~np.isnan(x)
    with np.errstate(all="ignore"):
        xmin = np.where(observed.any(0), np.nanmin(np.where(observed, x, np.inf), axis=0), np.nan)
        xmax = np.where(observed.any(0), np.nanmax(np.where(observed, x, -np.inf), axis=0), np.nan)
    return observed.sum(0), xmin, xmax


def _log1p(x: np.ndarray | sp.spmatrix, inplace: bool = False) -> np.ndarray | sp.spmatrix:
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
    """Per-row total over every feature, missing values ignored (float64)."""
    if sp.issparse(x):
        x = sp.csr_matrix(x, copy=True)
        x.data = np.nan_to_num(x.data, nan=0.0)
        return np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    # in row chunks: no float64 copy of a whole training matrix
    return np.concatenate(
        [np.nansum(x[i : i + CHUNK_ROWS], axis=1, dtype=np.float64)
         for i in range(0, x.shape[0], CHUNK_ROWS)] or [np.zeros(0)]
    )  # fmt: skip


def _normalise_total(
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


class Preprocessor:
    """Fit on training samples, apply to any samples (validation, test, new data)."""

    def __init__(
        self,
        max_features: int | None = 2000,
        log1p: str | bool = "auto",
        scale: bool = True,
        clip: float | None = 10.0,
    ) -> None:
        if log1p not in ("auto", True, False):
            raise InputError(f"log1p must be 'auto', True or False, not {log1p!r}")
        self.max_features = max_features
        self.log1p = log1p
        self.scale = scale
        self.clip = clip
        self.classes: list[str] = []
        self._mods: dict[str, _ModState] = {}

    @property
    def features(self) -> dict[str, list[str]]:
        """Modality -> kept feature names (the columns of ``ProcessedData.X[m]``)."""
        return {m: list(s.features) for m, s in self._mods.items()}

    def summary(self) -> dict[str, dict]:
        """Per modality: count detection, features in/dropped/kept (for reports)."""
        return {m: {"is_count": s.is_count, **s.info} for m, s in self._mods.items()}

    # ------------------------------------------------------------------ fit

    def fit(self, data: MultiOmicsData, train_ids: pd.Index | list[str]) -> Preprocessor:
        """Learn every statistic from ``train_ids`` only (never from validation/test rows)."""
        train_ids = pd.Index(train_ids)
        self.classes = data.classes
        self._mods = {}
        for name, adata in data.mods.items():
            sub = _rows(adata, train_ids)
            if sub.n_obs == 0:
                raise InputError(f"modality {name!r}: no training sample has it")
            self._mods[name] = self._fit_modality(name, sub)
        return self

    def _fit_modality(self, name: str, sub: ad.AnnData) -> _ModState:
        x = sub.X
        n_in = x.shape[1]
        n_obs, xmin, xmax = _nan_stats(x)
        keep = (n_obs > 0) & (xmax > xmin)
        if not keep.any():
            raise InputError(
                f"modality {name!r}: every feature is constant or missing in the training samples"
            )
        cols = np.flatnonzero(keep)
        full = x
        x = x[:, cols]
        is_count = is_count_like(x) if self.log1p == "auto" else bool(self.log1p)
        raw_counts = x
        target_sum = None
        if is_count:
            size = library_size(full)  # over every feature, as for new rows in transform
            # median training library size: scanpy normalize_total's default target
            target_sum = float(np.median(size[size > 0])) if (size > 0).any() else 1.0
            x = _log1p(_normalise_total(x, size, target_sum), inplace=not sp.issparse(x))
        var_names = sub.var_names[cols]
        # seurat_v3 models raw counts; only asked for when counts come from a layer
        v3 = is_count and sub.uns.get("balmm_layer") is not None
        # Feature selection on sparse input stays sparse; only the kept columns are densified.
        if self.max_features is not None and len(cols) > self.max_features:
            sel = self._select(raw_counts if v3 else x, var_names, is_count, v3)
            x = x[:, sel]
            cols = cols[sel]
            var_names = var_names[sel]
        # float32 working copy: single-cell sized training sets stay affordable.
        xd = _dense(x, np.float32)
        imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(xd)
        median = imputer.statistics_.astype(np.float64)
        gaps = np.isnan(xd)
        if gaps.any():  # fill in place rather than through a second full copy
            xd[gaps] = median[np.nonzero(gaps)[1]]
        del gaps
        if self.scale:
            scaler = StandardScaler().fit(xd)
            mean, scale = scaler.mean_, scaler.scale_
        else:
            mean, scale = np.zeros(xd.shape[1]), np.ones(xd.shape[1])
        info = {
            "n_train_samples": int(sub.n_obs),
            "n_features_in": int(n_in),
            "n_dropped_constant_or_missing": int(n_in - keep.sum()),
            "n_features_out": len(var_names),
            "selection": ("highly_variable_genes (seurat_v3, raw counts)" if v3 else
                          "highly_variable_genes" if is_count else "variance"),
            "normalised_total": target_sum,
        }  # fmt: skip
        return _ModState(list(map(str, var_names)), is_count, median, mean, scale, info,
                         target_sum)  # fmt: skip

    def _select(
        self, x: np.ndarray | sp.spmatrix, var_names: pd.Index, is_count: bool, v3: bool = False
    ) -> np.ndarray:
        k = int(self.max_features or 0)
        if is_count:
            if sp.issparse(x):
                xs = sp.csr_matrix(x)
            else:  # HVG needs complete data: fill gaps with the training median first
                xs = _dense(x)
                xs = np.where(np.isnan(xs), np.nan_to_num(np.nanmedian(xs, axis=0)), xs)
            tmp = ad.AnnData(X=xs)
            tmp.var_names = var_names.astype(str)
            import scanpy as sc

            if v3:
                hvg = sc.pp.highly_variable_genes(
                    tmp, n_top_genes=k, flavor="seurat_v3", inplace=False
                )
                rank = hvg["highly_variable_rank"].to_numpy(dtype=np.float64)
                order = np.argsort(np.nan_to_num(rank, nan=np.inf), kind="stable")[:k]
            else:
                hvg = sc.pp.highly_variable_genes(
                    tmp, n_top_genes=k, flavor="seurat", inplace=False
                )
                disp = hvg["dispersions_norm"].to_numpy(dtype=np.float64)
                order = np.argsort(-np.nan_to_num(disp, nan=-np.inf), kind="stable")[:k]
        else:
            if sp.issparse(x):
                from sklearn.utils.sparsefuncs import mean_variance_axis

                var = mean_variance_axis(sp.csr_matrix(x), axis=0)[1]
            else:
                var = np.nanvar(_dense(x), axis=0)
            order = np.argsort(-var, kind="stable")[:k]
        return np.sort(order)

    # ------------------------------------------------------------ transform

    def transform(self, data: MultiOmicsData, ids: pd.Index | list[str]) -> ProcessedData:
        """Apply the fitted steps to ``ids`` (statistics are never re-estimated)."""
        if not self._mods:
            raise RuntimeError("Preprocessor.transform called before fit/load")
        ids = pd.Index(ids)
        unknown = ids[~ids.isin(data.obs.index)]
        if len(unknown):
            raise InputError(f"sample {unknown[0]!r} is not in the data")
        X, mask = {}, {}
        for name, state in self._mods.items():
            out = np.zeros((len(ids), len(state.features)), dtype=np.float32)
            have = np.zeros(len(ids), dtype=bool)
            adata = data.mods.get(name)
            if adata is not None:
                have = ids.isin(adata.obs_names)
                rows = np.flatnonzero(have)
                pos = self._feature_positions(name, state, adata)
                # Chunks bound the float64 working copy (single-cell sized inputs).
                for start in range(0, len(rows), CHUNK_ROWS):
                    r = rows[start : start + CHUNK_ROWS]
                    out[r] = self._transform_modality(state, adata, ids[r], pos)
            X[name], mask[name] = out, have
        if LABEL in data.obs:
            y = data.y(ids, classes=self.classes)
        else:
            y = np.full(len(ids), -1, dtype=np.int64)
        return ProcessedData(ids=ids, X=X, mask=mask, y=y, classes=list(self.classes))

    @staticmethod
    def _feature_positions(name: str, state: _ModState, adata: ad.AnnData) -> np.ndarray:
        """Column of each model feature in ``adata`` (-1: absent, warned about once)."""
        pos = adata.var_names.get_indexer(pd.Index(state.features))
        missing = pos < 0
        if missing.all():
            raise InputError(f"modality {name!r}: none of the model's features is in the data")
        if missing.any():
            logger.warning(
                "modality %r: %d of %d model features absent (e.g. %r); filled with the "
                "training median",
                name,
                int(missing.sum()),
                len(pos),
                state.features[int(np.flatnonzero(missing)[0])],
            )
        return pos

    def _transform_modality(
        self, state: _ModState, adata: ad.AnnData, ids: pd.Index, pos: np.ndarray
    ) -> np.ndarray:
        missing = pos < 0
        rows = adata.obs_names.get_indexer(ids)
        full = adata.X[rows]
        x = full[:, np.where(missing, 0, pos)]
        # ``x`` is a float64 array of its own (fancy indexing copies): log1p works in place.
        x = _dense(x)
        x[:, missing] = np.nan
        if state.is_count:
            np.clip(x, 0, None, out=x)
            if state.target_sum is not None:
                x = _normalise_total(x, library_size(full), state.target_sum)
            x = _log1p(x, inplace=True)
        x = np.where(np.isnan(x), state.median, x)
        x = (x - state.mean) / np.where(state.scale > 0, state.scale, 1.0)
        if self.clip is not None:
            np.clip(x, -self.clip, self.clip, out=x)
        return x.astype(np.float32)

    # ----------------------------------------------------------- save / load

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``preprocess.json`` (settings, features) and ``preprocess.npz`` (statistics)."""
        from balmm.outputs import write_json_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "format": 1,
            "max_features": self.max_features,
            "log1p": self.log1p,
            "scale": self.scale,
            "clip": self.clip,
            "classes": self.classes,
            "modalities": {
                m: {
                    "features": s.features,
                    "is_count": s.is_count,
                    "info": s.info,
                    "target_sum": s.target_sum,
                }
                for m, s in self._mods.items()
            },
        }
        arrays = {}
        for i, (_m, s) in enumerate(self._mods.items()):
            arrays[f"m{i}_median"] = s.median
            arrays[f"m{i}_mean"] = s.mean
            arrays[f"m{i}_scale"] = s.scale
        np.savez(directory / STATE_NPZ, **arrays)
        write_json_atomic(directory / STATE_JSON, state)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Preprocessor:
        directory = Path(directory)
        try:
            state = json.loads((directory / STATE_JSON).read_text())
            arrays = np.load(directory / STATE_NPZ)
        except (OSError, ValueError) as exc:
            raise InputError(f"{directory}: no readable preprocessing state ({exc})") from exc
        pre = cls(state["max_features"], state["log1p"], state["scale"], state["clip"])
        pre.classes = list(state["classes"])
        for i, (m, s) in enumerate(state["modalities"].items()):
            pre._mods[m] = _ModState(
                features=list(s["features"]),
                is_count=bool(s["is_count"]),
                median=arrays[f"m{i}_median"],
                mean=arrays[f"m{i}_mean"],
                scale=arrays[f"m{i}_scale"],
                info=dict(s.get("info", {})),
                target_sum=s.get("target_sum"),
            )
        return pre
