"""A plain-dict description of a loaded dataset (what ``balmm inspect`` shows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from balmm.data.dataset import LABEL, SPLIT, MultiOmicsData
from balmm.data.pairing import pairing_summary

UNLABELLED = "(unlabelled)"


def _matrix_stats(x: np.ndarray | sp.spmatrix) -> tuple[int, float]:
    """(number of NaN cells, fraction of exact zeros) without densifying sparse X."""
    n_cells = x.shape[0] * x.shape[1]
    if sp.issparse(x):
        n_nan = int(np.isnan(x.data).sum())
        zeros = n_cells - x.nnz + int((x.data == 0).sum())
    else:
        arr = np.asarray(x)
        n_nan = int(np.isnan(arr).sum())
        zeros = int((arr == 0).sum())
    return n_nan, (zeros / n_cells if n_cells else 0.0)


def describe(data: MultiOmicsData) -> dict:
    """Modalities, pairing, labels and class counts per split, notes; JSON-ready."""
    split = data.obs[SPLIT] if SPLIT in data.obs else pd.Series("train", index=data.obs.index)
    mods = {}
    for name, m in data.mods.items():
        n_nan, sparsity = _matrix_stats(m.X)
        s = split.reindex(m.obs_names)
        mods[name] = {
            "n_samples": int(m.n_obs),
            "n_features": int(m.n_vars),
            "missing_values": n_nan,
            "missing_fraction": n_nan / max(1, m.n_obs * m.n_vars),
            "sparsity": sparsity,
            "storage": "sparse" if sp.issparse(m.X) else "dense",
            "n_train": int((s == "train").sum()),
            "n_test": int((s == "test").sum()),
        }
    labels: dict[str, dict[str, int]] = {}
    lab = data.obs[LABEL] if LABEL in data.obs else pd.Series(np.nan, index=data.obs.index)
    for sp_name in sorted(split.dropna().unique(), key=lambda v: (v != "train", str(v))):
        sub = lab[split == sp_name]
        counts = {str(c): int(n) for c, n in sub.dropna().astype(str).value_counts().items()}
        counts = dict(sorted(counts.items()))
        if sub.isna().any():
            counts[UNLABELLED] = int(sub.isna().sum())
        labels[str(sp_name)] = counts
    return {
        "source": data.source,
        "label_key": data.label_key,
        "label_mapping": data.label_mapping,
        "classes": data.classes,
        "split_source": data.split_source,
        "n_samples": int(len(data.obs)),
        "modalities": mods,
        "pairing": pairing_summary(data),
        "labels": labels,
        "notes": list(data.notes),
    }
