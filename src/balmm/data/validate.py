"""Checks on inputs; each failure is an InputError whose one-line message names the culprit."""

from __future__ import annotations

from collections.abc import Iterable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from balmm.errors import InputError


def _show(values: Iterable[object], n: int = 3) -> str:
    vals = list(values)
    shown = ", ".join(repr(str(v)) for v in vals[:n])
    return shown + (f" and {len(vals) - n} more" if len(vals) > n else "")


def check_unique(index: Iterable[object], what: str, where: str) -> None:
    """Reject duplicated sample IDs / feature names."""
    idx = pd.Index(index)
    dup = idx[idx.duplicated()].unique()
    if len(dup):
        hint = ""
        if what == "sample ID" and pd.to_numeric(pd.Series(idx), errors="coerce").notna().all():
            hint = " (numbers: does the file lack a sample-ID column? then use --no-ids)"
        raise InputError(f"{where}: duplicate {what} {_show(dup)}{hint}")


def numeric_values(df: pd.DataFrame, where: str) -> np.ndarray:
    """float32 values of ``df``; a non-numeric cell is reported by row and column."""
    non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c].dtype)]
    if non_numeric:
        df = df.copy()
    for col in non_numeric:
        raw = df[col]
        conv = pd.to_numeric(raw, errors="coerce")
        bad = conv.isna() & raw.notna()
        if bad.any():
            row = bad.index[bad.to_numpy()][0]
            raise InputError(
                f"{where}: non-numeric value {raw[row]!r} in row {row!r}, column {col!r}"
            )
        df[col] = conv
    with np.errstate(over="ignore"):  # a value beyond float32 becomes +-inf (then rejected)
        if all(pd.api.types.is_float_dtype(t) for t in df.dtypes):
            # float -> float32 directly: the same single rounding, without a float64 copy
            return df.to_numpy(dtype=np.float32, copy=True)
        # via float64: an integer above 2**53 would round differently if cast straight
        return df.to_numpy(dtype=np.float64).astype(np.float32)


def check_matrix(adata: ad.AnnData, where: str) -> None:
    """0 samples / 0 features and infinite values are errors; NaN (missing) is allowed."""
    if adata.n_obs == 0:
        raise InputError(f"{where}: 0 samples")
    if adata.n_vars == 0:
        raise InputError(f"{where}: 0 features")
    x = adata.X
    if adata.isbacked:  # on disk: checked in row chunks, never read whole
        for start in range(0, adata.n_obs, 8192):
            chunk = x[start : start + 8192]
            vals = chunk.data if sp.issparse(chunk) else np.asarray(chunk)
            if np.issubdtype(vals.dtype, np.floating) and np.isinf(vals).any():
                i, j = (int(v[0]) for v in np.nonzero(np.isinf(_dense_chunk(chunk))))
                raise InputError(
                    f"{where}: infinite value in sample {adata.obs_names[start + i]!r}, feature "
                    f"{adata.var_names[j]!r} (use NaN or leave the cell empty for a missing value)"
                )
        return
    data = x.data if sp.issparse(x) else np.asarray(x)
    if np.isinf(data).any():
        if sp.issparse(x):
            coo = x.tocoo()
            k = int(np.flatnonzero(np.isinf(coo.data))[0])
            i, j = int(coo.row[k]), int(coo.col[k])
        else:
            i, j = (int(v[0]) for v in np.nonzero(np.isinf(data)))
        raise InputError(
            f"{where}: infinite value in sample {adata.obs_names[i]!r}, feature "
            f"{adata.var_names[j]!r} (use NaN or leave the cell empty for a missing value)"
        )


def _dense_chunk(chunk: object) -> np.ndarray:
    return chunk.toarray() if sp.issparse(chunk) else np.asarray(chunk)


def check_modality_names(names: list[str]) -> None:
    dup = [n for n in set(names) if names.count(n) > 1]
    if dup:
        raise InputError(f"modality name {dup[0]!r} given more than once (NAME=PATH)")
    for n in names:
        if not n or "/" in n:
            raise InputError(f"invalid modality name {n!r} (NAME=PATH needs a plain NAME)")


def check_shared_samples(mods: dict[str, ad.AnnData]) -> None:
    """Each modality must share at least one sample ID with another one (pairing is by ID)."""
    if len(mods) < 2:
        return
    for name, m in mods.items():
        others = set().union(*(set(o.obs_names) for n, o in mods.items() if n != name))
        if not others.intersection(m.obs_names):
            example = m.obs_names[0]
            other_example = next(iter(sorted(others)))
            raise InputError(
                f"modality {name!r} shares no sample ID with the other modalities (its IDs look "
                f"like {example!r}, theirs like {other_example!r}; files without an ID column "
                "need --no-ids)"
            )


def check_classes(labels: pd.Series, split: pd.Series, label_key: str) -> None:
    """At least 2 classes, and at least 2 training samples in every class."""
    lab = labels.dropna().astype(str)
    classes = sorted(lab.unique())
    if len(classes) < 2:
        found = f"only class {classes[0]!r}" if classes else "no labels"
        raise InputError(f"label {label_key!r}: {found}; at least 2 classes are needed")
    train = lab[split.reindex(lab.index) == "train"]
    counts = train.value_counts()
    for c in classes:
        if counts.get(c, 0) < 2:
            raise InputError(
                f"label {label_key!r}: class {c!r} has {int(counts.get(c, 0))} training "
                "sample(s); every class needs at least 2"
            )


def drop_unmeasured_rows(mods: dict[str, ad.AnnData]) -> list[str]:
    """A sample whose row is NaN in every feature of a modality was not measured there: it
    is removed from that modality, so pairing counts it as missing the modality (instead
    of predicting it from imputed medians). Returns one note per modality affected."""
    notes = []
    for name, m in list(mods.items()):
        empty = np.zeros(m.n_obs, dtype=bool)
        for start in range(0, m.n_obs, 8192):  # chunks bound the boolean working copy
            x = m.X[start : start + 8192]
            if sp.issparse(x):
                x = sp.csr_matrix(x)
                nan_per_row = np.bincount(
                    np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))[np.isnan(x.data)],
                    minlength=x.shape[0],
                )
                empty[start : start + x.shape[0]] = nan_per_row == m.n_vars
            else:
                empty[start : start + len(x)] = np.isnan(np.asarray(x)).all(axis=1)
        if empty.all():
            raise InputError(f"modality {name!r}: every sample has only missing values (NaN)")
        if empty.any() and m.isbacked:
            raise InputError(
                f"modality {name!r}: {int(empty.sum())} samples have only missing values (e.g. "
                f"{m.obs_names[np.flatnonzero(empty)[0]]!r}); --backed cannot leave them out of "
                "the file: remove them, or read the data into memory (--in-memory)"
            )
        if empty.any():
            mods[name] = m[~empty].copy()
            first = m.obs_names[np.flatnonzero(empty)[0]]
            notes.append(
                f"modality {name!r}: {int(empty.sum())} samples have only missing values "
                f"(e.g. {first!r}): counted as not measured in {name!r}"
            )
    return notes
