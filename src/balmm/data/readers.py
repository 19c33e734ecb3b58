"""Readers for single files and folder layouts.

Each reader returns AnnData objects (rows = samples, float32 X, NaN = missing)
plus, where the format carries them, a table of per-sample annotations (label
candidates, split). Pairing, labels and splits are resolved in
:mod:`balmm.data.io`; checks shared by all formats live in
:mod:`balmm.data.validate`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from balmm.data import validate
from balmm.errors import InputError

logger = logging.getLogger("balmm")

TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst")


@dataclass
class RawInput:
    """What a reader found before labels and splits are resolved."""

    mods: dict[str, ad.AnnData]
    annotations: pd.DataFrame = field(default_factory=pd.DataFrame)  # sample x columns
    split: pd.Series | None = None  # "train"/"test" per sample, when the format gives one
    split_source: str = ""
    label_hint: str | None = None  # the column to use when --label-col is not given
    source: str = ""
    notes: list[str] = field(default_factory=list)
    uns: dict = field(default_factory=dict)
    label_mapping: dict[str, str] = field(default_factory=dict)


def strip_compression(path: Path) -> tuple[str, str]:
    """(suffix without compression, compression suffix or '')."""
    suffixes = [s.lower() for s in path.suffixes]
    comp = ""
    if suffixes and suffixes[-1] in COMPRESSIONS:
        comp = suffixes.pop()
    return (suffixes[-1] if suffixes else ""), comp


def check_exists(path: Path, what: str = "input") -> None:
    if not path.exists():
        raise InputError(f"{what} not found: {path}")


MAX_TEXT_ENV = "BALMM_MAX_TEXT_MB"
MAX_TEXT_MB = 512  # text beyond this belongs in .h5ad/.h5mu; a 1000-fold .gz bomb stops here


def max_text_bytes() -> int | None:
    """The cap on one text input's (decompressed) size; None = no cap (``BALMM_MAX_TEXT_MB=0``)."""
    raw = os.environ.get(MAX_TEXT_ENV, "").strip()
    try:
        mb = float(raw) if raw else MAX_TEXT_MB
    except ValueError:
        raise InputError(f"{MAX_TEXT_ENV}={raw!r}: expected a number of megabytes") from None
    return None if mb <= 0 else int(mb * 2**20)


def check_text_size(path: Path) -> None:
    """Refuse a text input larger than the cap before parsing it (a compressed file is
    decompressed as a stream and counted, stopping at the cap)."""
    limit = max_text_bytes()
    if limit is None:
        return
    _, comp = strip_compression(path)
    if not comp:
        size = path.stat().st_size
    else:
        size = 0
        try:
            with pd.io.common.get_handle(path, "rb", compression="infer", is_text=False) as h:
                while size <= limit:
                    chunk = h.handle.read(1 << 22)
                    if not chunk:
                        break
                    size += len(chunk)
        except Exception as exc:  # noqa: BLE001 - zlib, lzma, zipfile, zstd: own error types
            raise InputError(f"{path}: cannot decompress ({type(exc).__name__}: {exc})") from None
    if size > limit:
        raise InputError(
            f"{path}: more than {limit / 2**20:g} MB of text"
            f"{' after decompression' if comp else ''}; store large data as .h5ad/.h5mu, or "
            f"raise the cap with {MAX_TEXT_ENV}=N (megabytes; 0 = no cap)"
        )


def check_table_header(path: Path, name: str, no_ids: bool = False) -> None:
    """Size cap and header row of a samples x features table, checked before the matrix is
    read: at least one feature column, no repeated column names."""
    check_exists(path)
    check_text_size(path)
    try:
        head = pd.read_csv(path, sep=_sep_for(path), header=None, nrows=1, dtype=str,
                           compression="infer", keep_default_na=False)  # fmt: skip
        names = head.iloc[0].tolist()
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot parse as a delimited table ({first})") from None
    features = names if no_ids else names[1:]
    if not features:
        raise InputError(f"{path} (modality {name!r}): 0 features (only an ID column?)")
    validate.check_unique(features, "column name", str(path))


def _sep_for(path: Path) -> str:
    suffix, _ = strip_compression(path)
    if suffix in (".csv", ".tsv"):
        return "," if suffix == ".csv" else "\t"
    # .txt: tab if the first line has one, else comma (also right for one-column ID lists).
    try:
        with pd.io.common.get_handle(path, "r", compression="infer") as h:
            first = h.handle.readline()
    except (OSError, UnicodeDecodeError, EOFError):
        return ","
    return "\t" if "\t" in first else ","


def read_csv_frame(
    path: Path, header: bool = True, index: bool = True, numeric: bool = False
) -> pd.DataFrame:
    """Read a delimited text file with pandas; errors become InputError naming the file.

    ``numeric``: parse every non-ID column straight to float32 (memory: no object columns);
    if a cell is not a number, the file is re-read generically so that
    :func:`balmm.data.validate.numeric_values` can name the row and column.
    """
    check_exists(path)
    check_text_size(path)
    sep = _sep_for(path)
    kwargs = {
        "sep": sep,
        "header": 0 if header else None,
        "index_col": 0 if index else None,
        "compression": "infer",
    }
    df = None
    if numeric:
        dtype = defaultdict(lambda: np.float32)
        if index:
            dtype[0] = str
        with contextlib.suppress(ValueError, TypeError):
            df = pd.read_csv(path, dtype=dtype, **kwargs)
    try:
        if df is None:
            df = pd.read_csv(path, dtype={0: str} if index else None, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{path}: the file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot parse as a delimited table ({first})") from exc
    if header:
        # pandas renames repeated column names (x, x.1); read the header as written instead.
        names = (
            pd.read_csv(
                path,
                sep=sep,
                header=None,
                nrows=1,
                dtype=str,
                compression="infer",
                keep_default_na=False,
            )
            .iloc[0]
            .tolist()
        )
        names = names[1:] if index else names
        if len(names) == df.shape[1]:
            validate.check_unique(names, "column name", str(path))
            df.columns = names  # also a feature named like the ID column ("sample.1" else)
    if index:
        if df.index.isna().any():
            row = int(np.flatnonzero(df.index.isna())[0]) + (2 if header else 1)
            raise InputError(f"{path}: empty or NA sample ID on line {row}")
        df.index = df.index.astype(str)
        df.index.name = "sample"
    df.columns = [str(c) for c in df.columns]
    return df


def frame_to_anndata(df: pd.DataFrame, path: Path, name: str) -> ad.AnnData:
    """Numeric samples x features frame -> AnnData (float32), validating as it goes."""
    where = f"{path} (modality {name!r})"
    validate.check_unique(df.index, "sample ID", where)
    validate.check_unique(df.columns, "feature name", where)
    values = validate.numeric_values(df, where)
    adata = ad.AnnData(
        X=values,
        obs=pd.DataFrame(index=pd.Index(df.index, name="sample")),
        var=pd.DataFrame(index=pd.Index(df.columns, name="feature")),
    )
    validate.check_matrix(adata, where)
    return adata


def positional_ids(n: int) -> list[str]:
    """Sample names for files without an ID column (rows paired by position)."""
    return [f"row_{i + 1:04d}" for i in range(n)]


def read_table(path: Path, name: str, transpose: bool = False, no_ids: bool = False) -> ad.AnnData:
    """CSV/TSV (optionally compressed), samples x features, first column = sample IDs.

    With ``transpose`` the file is features x samples (Flexynesis layout). With ``no_ids``
    the file has no ID column and rows are named by position (``row_0001``, ...).
    """
    if no_ids:
        df = read_csv_frame(path, index=False)
        df.index = pd.Index(positional_ids(len(df)), name="sample")
    else:
        df = read_csv_frame(path, numeric=not transpose)
    if transpose:
        df = df.T
        df.index = df.index.astype(str)
    if df.shape[1] == 0:
        raise InputError(f"{path} (modality {name!r}): 0 features (only an ID column?)")
    return frame_to_anndata(df, path, name)


# --backed auto: a matrix larger than this in memory (float32) stays on disk
BACKED_AUTO_BYTES = 4 * 2**30


def stored_x_bytes(path: Path, groups: list[str]) -> int:
    """The largest in-memory size (float32) of the X matrices stored at ``groups`` of an
    HDF5 file (h5ad: ``[""]``; h5mu: ``mod/NAME``), read from the file's metadata; 0 when
    unreadable (the reader then names the problem)."""
    import h5py

    sizes = [0]
    try:
        with h5py.File(path, "r") as f:
            for g in groups:
                x = (f[g] if g else f).get("X")
                if isinstance(x, h5py.Dataset):
                    sizes.append(int(np.prod(x.shape)) * 4)
                elif x is not None:
                    sizes.append(int(x["data"].shape[0]) * 8 + int(x["indptr"].shape[0]) * 8)
    except (OSError, KeyError, TypeError):
        return 0
    return max(sizes)


def read_h5ad_file(
    path: Path,
    name: str,
    layer: str | None = None,
    var_key: str | None = None,
    backed: bool | None = False,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """An .h5ad modality: X (or ``layer``) as float32 (sparse stays sparse), restricted to
    the features of the boolean ``.var[var_key]``, and its obs (label candidates).
    ``backed``: leave X on disk (anndata backed mode); None: only when it is large."""
    from balmm.data.anndata_input import select_backed, select_matrix

    check_exists(path)
    if backed is None:
        backed = stored_x_bytes(path, [""]) > BACKED_AUTO_BYTES
    try:
        adata = ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as exc:  # h5py/anndata raise many types for damaged files
        raise InputError(f"{path}: not a readable .h5ad file ({type(exc).__name__})") from exc
    where = f"{path} (modality {name!r})"
    if adata.isbacked:
        clean = select_backed(adata, where, layer, var_key)
        return clean, clean.obs.copy()
    adata.obs_names = adata.obs_names.astype(str)
    clean = select_matrix(adata, where, layer, var_key)
    return clean, clean.obs.copy()


def clean_anndata(x: object, obs_names: pd.Index, var_names: pd.Index, where: str) -> ad.AnnData:
    """A bare, validated AnnData of a stored matrix: float32 X (sparse stays sparse) with
    string sample IDs / feature names and nothing else (stored obs/var/uns are dropped)."""
    adata = ad.AnnData(
        X=to_float32(x, where),
        obs=pd.DataFrame(index=pd.Index(obs_names.astype(str), name="sample")),
        var=pd.DataFrame(index=pd.Index(var_names.astype(str), name="feature")),
    )
    validate.check_unique(adata.obs_names, "sample ID", where)
    validate.check_unique(adata.var_names, "feature name", where)
    validate.check_matrix(adata, where)
    return adata


def to_float32(x: object, where: str) -> np.ndarray | sp.csr_matrix:
    """Dense or CSR float32 copy of an AnnData X (backed/other types are materialised)."""
    if x is None:
        raise InputError(f"{where}: the file has no X matrix")
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float32)
    try:
        return np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: X is not numeric ({exc})") from exc


def concat_rows(parts: list[ad.AnnData], where: str, name: str) -> ad.AnnData:
    """Stack the train and test files of one modality (same features, any order)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    aligned = [first]
    for p in parts[1:]:
        if set(p.var_names) != set(first.var_names):
            missing = [f for f in first.var_names if f not in set(p.var_names)]
            extra = [f for f in p.var_names if f not in set(first.var_names)]
            which = f"missing {missing[:3]}" if missing else f"extra {extra[:3]}"
            raise InputError(
                f"{where}: the files of modality {name!r} differ in features ({which})"
            )
        aligned.append(p[:, first.var_names])
    out = ad.concat(aligned, axis=0, join="inner", merge="first")
    out.var = pd.DataFrame(index=pd.Index(first.var_names, name="feature"))
    validate.check_unique(out.obs_names, "sample ID", where)
    return out


# ---------------------------------------------------------------------- label files


def read_annotation_files(paths: list[Path], no_ids: bool = False) -> pd.DataFrame:
    """Label/annotation CSVs (first column = sample ID), stacked by rows and joined by columns.

    The same sample may appear in several files (e.g. genotype.csv and diet.csv) as
    long as the values do not conflict.
    """
    merged: pd.DataFrame | None = None
    for path in paths:
        path = Path(path)
        check_exists(path, "--labels file")
        if no_ids:
            df = read_csv_frame(path, index=False)
            df.index = pd.Index(positional_ids(len(df)), name="sample")
        else:
            df = read_csv_frame(path)
        validate.check_unique(df.index, "sample ID", str(path))
        if merged is None:
            merged = df
            continue
        both = merged.index.intersection(df.index)
        for col in merged.columns.intersection(df.columns):
            a = merged.loc[both, col].astype(str)
            b = df.loc[both, col].astype(str)
            bad = (a != b) & merged.loc[both, col].notna() & df.loc[both, col].notna()
            if bad.any():
                s = bad.index[bad.to_numpy()][0]
                raise InputError(
                    f"{path}: sample {s!r} has {col}={b[s]!r} but an earlier --labels file "
                    f"says {a[s]!r}"
                )
        merged = merged.combine_first(df)
    return merged if merged is not None else pd.DataFrame()


def read_id_list(path: Path) -> pd.Index:
    """Sample IDs from the first column of a file (a header line is detected and skipped)."""
    df = read_csv_frame(path, header=False, index=False)
    ids = df.iloc[:, 0].astype(str).str.strip()
    return pd.Index(ids)
