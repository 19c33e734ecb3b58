"""Per-modality preprocessing fitted on training samples only.

Steps per modality, all statistics from the training rows:

1. drop features that are all-missing or constant;
2. count-like modalities (every observed value is a non-negative integer and the
   maximum is at least ``COUNT_MIN_MAX``, so binary mutation calls or GISTIC levels are
   not mistaken for counts): library-size normalisation to the median training library
   size (scanpy ``normalize_total``'s rule, with the target fixed at fit time), then
   ``log1p`` (scanpy);
3. impute missing values with the training median (numpy ``nanmedian``);
4. keep at most ``max_features`` features: scanpy highly-variable genes for counts
   (``seurat_v3`` on the raw counts when they were read from a layer, e.g.
   ``layer="counts"``; else ``seurat`` on the normalised log values), the highest
   training variance otherwise;
5. standardise (scikit-learn ``StandardScaler``) and clip to ``[-clip, clip]``.

The fitted state is plain JSON + npz so a model bundle can carry it. The steps themselves
are functions in :mod:`balmm.data.preprocess_steps`; this module holds the fitted state.
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
from sklearn.preprocessing import StandardScaler

from balmm.data import matrix
from balmm.data.dataset import LABEL, MultiOmicsData
from balmm.data.preprocess_steps import (
    COUNT_MIN_MAX,
    library_size,
    library_sizes,
    log1p_float64,
    normalise_total,
    scan_columns,
    select_features,
)
from balmm.data.preprocess_steps import is_count_like as is_count_like  # public here too
from balmm.errors import InputError

logger = logging.getLogger("balmm")

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
        """Learn every statistic from ``train_ids`` only (never from validation/test rows).

        Statistics are computed in row chunks (observed counts, ranges, library sizes) and
        column blocks (variances, medians, means, scales) of the kept columns, so no dense
        copy of a whole training matrix is made; sparse and on-disk (backed) matrices give
        the same state as the same values held dense in memory."""
        train_ids = pd.Index(train_ids)
        self.classes = data.classes
        self._mods = {}
        for name, adata in data.mods.items():
            # training rows in the modality's own order (the order fixes summation order)
            rows = np.flatnonzero(adata.obs_names.isin(train_ids))
            if len(rows) == 0:
                raise InputError(f"modality {name!r}: no training sample has it")
            self._mods[name] = self._fit_modality(name, adata, rows)
        return self

    def _fit_modality(self, name: str, adata: ad.AnnData, rows: np.ndarray) -> _ModState:
        x = adata.X
        n_in = x.shape[1]
        st = scan_columns(x, rows)
        keep = (st["n_obs"] > 0) & (st["max"] > st["min"])
        if not keep.any():
            raise InputError(
                f"modality {name!r}: every feature is constant or missing in the training samples"
            )
        cols = np.flatnonzero(keep)
        if self.log1p == "auto":
            is_count = bool(
                not st["non_integer"][cols].any()
                and np.nanmin(st["min"][cols]) >= 0
                and np.nanmax(st["max"][cols]) >= COUNT_MIN_MAX
            )
        else:
            is_count = bool(self.log1p)
        target_sum = None
        size = None
        if is_count:
            size = library_sizes(x, rows)  # over every feature, as for new rows in transform
            # median training library size: scanpy normalize_total's default target
            target_sum = float(np.median(size[size > 0])) if (size > 0).any() else 1.0
        var_names = adata.var_names[cols]
        # seurat_v3 models raw counts; only asked for when counts come from a layer
        v3 = is_count and adata.uns.get("balmm_layer") is not None
        reader = matrix.ColumnReader(x, rows, cols)
        if self.max_features is not None and len(cols) > self.max_features:
            sel = select_features(
                reader, var_names, int(self.max_features), is_count, v3, size, target_sum
            )
            cols, var_names = cols[sel], var_names[sel]
        else:
            sel = np.arange(len(cols))
        k = len(sel)
        median, mean, scale = np.zeros(k), np.zeros(k), np.ones(k)
        for blk in matrix.column_blocks(k, len(rows)):
            xb = reader.block(sel[blk])
            if is_count:
                xb = log1p_float64(normalise_total(xb, size, target_sum), inplace=True)
                xb = xb.astype(np.float32)  # float32 statistics, as for dense input before
            # the medians scikit-learn's SimpleImputer gives, bit for bit (tested), but by
            # partition, O(n) per column: SimpleImputer sorts a masked copy, O(n log n) and
            # 6x slower; at 100k samples it was most of preprocessing's time
            med = np.nanmedian(xb, axis=0)  # every kept column has an observed value
            median[blk] = med
            gaps = np.isnan(xb)
            if gaps.any():  # fill in place rather than through a second copy
                xb[gaps] = med[np.nonzero(gaps)[1]]
            if self.scale:
                scaler = StandardScaler().fit(xb)
                mean[blk], scale[blk] = scaler.mean_, scaler.scale_
        info = {
            "n_train_samples": int(len(rows)),
            "n_features_in": int(n_in),
            "n_dropped_constant_or_missing": int(n_in - keep.sum()),
            "n_features_out": len(var_names),
            "selection": ("highly_variable_genes (seurat_v3, raw counts)" if v3 else
                          "highly_variable_genes" if is_count else "variance"),
            "normalised_total": target_sum,
        }  # fmt: skip
        return _ModState(list(map(str, var_names)), is_count, median, mean, scale, info,
                         target_sum)  # fmt: skip

    def transform(
        self,
        data: MultiOmicsData,
        ids: pd.Index | list[str],
        store: str | os.PathLike[str] | None = None,
        release_keep: pd.Index | None = None,
    ) -> ProcessedData:
        """Apply the fitted steps to ``ids`` (statistics are never re-estimated).

        Columns are selected before rows and rows are read in chunks, so the float64 working
        copy is one chunk of the model's features. With ``store`` (a folder) each
        modality's features are written to a :class:`balmm.data.matrix.DiskMatrix` there
        instead of being held in memory (``--backed``). With ``release_keep`` (sample IDs),
        each modality's raw in-memory values are freed as soon as it is transformed, except
        those samples' rows (:meth:`MultiOmicsData.release_values`; ``data`` is changed), so
        the raw and preprocessed matrices of every modality are never held together."""
        if not self._mods:
            raise RuntimeError("Preprocessor.transform called before fit/load")
        ids = pd.Index(ids)
        unknown = ids[~ids.isin(data.obs.index)]
        if len(unknown):
            raise InputError(f"sample {unknown[0]!r} is not in the data")
        X, mask = {}, {}
        for i, (name, state) in enumerate(self._mods.items()):
            d = len(state.features)
            out: np.ndarray | matrix.DiskMatrix
            if store is None:
                out = np.zeros((len(ids), d), dtype=np.float32)
            else:
                out = matrix.DiskMatrix(Path(store) / f"m{i}.f32", len(ids), d)
            adata = data.mods.get(name)
            have = np.zeros(len(ids), dtype=bool)
            if adata is not None:
                have = ids.isin(adata.obs_names)
                src = adata.obs_names.get_indexer(ids)
                pos = self._feature_positions(name, state, adata)
                counts = state.is_count and state.target_sum is not None
                x = adata.X
                if sp.issparse(x) and not counts:
                    x = sp.csr_matrix(x[:, np.where(pos < 0, 0, pos)])  # columns first
                    pos_in = np.where(pos < 0, -1, np.arange(len(pos)))
                else:
                    pos_in = pos
                width = x.shape[1] if (counts or matrix.is_backed(x)) else d
                for sl in matrix.row_chunks(len(ids), width):
                    block = np.zeros((sl.stop - sl.start, d), dtype=np.float32)
                    sel = np.flatnonzero(have[sl])
                    if len(sel):
                        block[sel] = self._transform_rows(state, x, src[sl][sel], pos_in, counts)
                    if store is None:
                        out[sl] = block
                    else:
                        out.append(block)
            elif store is not None:
                for sl in matrix.row_chunks(len(ids), d):
                    out.append(np.zeros((sl.stop - sl.start, d), dtype=np.float32))
            X[name], mask[name] = out, have
            if release_keep is not None and adata is not None:
                x = None  # the last reference to the raw values here
                data.release_values(release_keep, names=[name])
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

    def _transform_rows(
        self, state: _ModState, x: object, rows: np.ndarray, pos: np.ndarray, counts: bool
    ) -> np.ndarray:
        """Rows ``rows`` of ``x`` through the fitted steps (``pos``: the model features'
        columns in ``x``, -1 where absent)."""
        missing = pos < 0
        cols = np.where(missing, 0, pos)
        if counts or matrix.is_backed(x):
            full = matrix.read_rows(x, rows)  # library sizes need every feature of the row
            size = library_size(full) if counts else None
            xs = full[:, cols]
            del full
        elif sp.issparse(x):
            xs, size = x[rows][:, cols], None
        else:
            xs, size = x[np.ix_(rows, cols)], None
        # a float64 array of its own: every later step works in place
        xs = matrix.to_dense(xs)
        xs[:, missing] = np.nan
        if state.is_count:
            np.clip(xs, 0, None, out=xs)
            if size is not None:
                xs = normalise_total(xs, size, state.target_sum)
            xs = log1p_float64(xs, inplace=True)
        xs = np.where(np.isnan(xs), state.median, xs)
        xs = (xs - state.mean) / np.where(state.scale > 0, state.scale, 1.0)
        if self.clip is not None:
            np.clip(xs, -self.clip, self.clip, out=xs)
        return xs.astype(np.float32)

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
