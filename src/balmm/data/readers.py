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


def read_h5ad_file(path: Path, name: str) -> tuple[ad.AnnData, pd.DataFrame]:
    """An .h5ad modality: X as float32 (sparse stays sparse) and its obs (label candidates)."""
    check_exists(path)
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for damaged files
        raise InputError(f"{path}: not a readable .h5ad file ({type(exc).__name__})") from exc
    where = f"{path} (modality {name!r})"
    obs = adata.obs.copy()
    obs.index = obs.index.astype(str)
    clean = ad.AnnData(
        X=to_float32(adata.X, where),
        obs=pd.DataFrame(index=pd.Index(obs.index, name="sample")),
        var=pd.DataFrame(index=pd.Index(adata.var_names.astype(str), name="feature")),
    )
    validate.check_unique(clean.obs_names, "sample ID", where)
    validate.check_unique(clean.var_names, "feature name", where)
    validate.check_matrix(clean, where)
    return clean, obs


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


# --------------------------------------------------------------------- MOGONET layout


def is_mogonet_dir(path: Path) -> bool:
    return path.is_dir() and (path / "1_tr.csv").exists()


def _headerless_matrix(path: Path) -> np.ndarray:
    df = read_csv_frame(path, header=False, index=False)
    # MOGONET files sometimes end rows with a trailing comma: an all-empty last column.
    if df.shape[1] > 1 and df.iloc[:, -1].isna().all():
        df = df.iloc[:, :-1]
    df.index = [f"row {i + 1}" for i in range(len(df))]
    df.columns = [f"column {j + 1}" for j in range(df.shape[1])]
    return validate.numeric_values(df, str(path))


def _names_file(path: Path, n: int, default_prefix: str) -> list[str]:
    if not path.exists():
        return [f"{default_prefix}{j}" for j in range(n)]
    names = read_csv_frame(path, header=False, index=False).iloc[:, 0].astype(str).tolist()
    if len(names) != n:
        raise InputError(f"{path}: {len(names)} feature names but the matrices have {n} columns")
    return names


# Modality names guessed from feature names, because MOGONET folders number their views.
_NAME_PATTERNS = [
    ("mrna", r"^(ENSG\d+|NM_\d+)"),
    ("methylation", r"^cg\d{6,}"),
    ("mirna", r"^(hsa-|mmu-)?(mir|let|miR)-?"),
]


def guess_modality_name(features: list[str], index: int, taken: set[str]) -> str:
    feats = pd.Series(features, dtype=str)
    for name, pattern in _NAME_PATTERNS:
        if name not in taken and feats.str.match(pattern).mean() > 0.8:
            return name
    return f"view{index}"


def read_mogonet(folder: Path, id_prefix: str = "") -> RawInput:
    """MOGONET layout: ``k_tr.csv``/``k_te.csv`` headerless matrices, row i = sample i.

    Samples are named ``{id_prefix}tr_000`` / ``{id_prefix}te_000`` (the files carry no IDs).
    """
    ks = sorted(
        int(p.name.split("_")[0]) for p in folder.glob("*_tr.csv") if p.name.split("_")[0].isdigit()
    )
    mods: dict[str, ad.AnnData] = {}
    labels: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for split in ("tr", "te"):
        lab_path = folder / f"labels_{split}.csv"
        if lab_path.exists():
            lab = read_csv_frame(lab_path, header=False, index=False)
            labels[split] = lab.iloc[:, 0].to_numpy()
            counts[lab_path.name] = len(lab)
    if "tr" not in labels:
        logger.info("%s: no labels_tr.csv; samples are unlabelled", folder)
    taken: set[str] = set()
    for k in ks:
        parts, names = [], []
        for split in ("tr", "te"):
            path = folder / f"{k}_{split}.csv"
            if not path.exists():
                if split == "te":
                    continue
                raise InputError(f"{path}: missing")
            mat = _headerless_matrix(path)
            counts[path.name] = mat.shape[0]
            parts.append(mat)
            names += [f"{id_prefix}{split}_{i:03d}" for i in range(mat.shape[0])]
        n_feat = {p.shape[1] for p in parts}
        if len(n_feat) != 1:
            raise InputError(
                f"{folder}: {k}_tr.csv and {k}_te.csv have different numbers of columns"
            )
        feats = _names_file(folder / f"{k}_featname.csv", parts[0].shape[1], f"f{k}_")
        name = guess_modality_name(feats, k, taken)
        taken.add(name)
        adata = ad.AnnData(
            X=np.vstack(parts).astype(np.float32),
            obs=pd.DataFrame(index=pd.Index(names, name="sample")),
            var=pd.DataFrame(index=pd.Index(feats, name="feature")),
        )
        validate.check_unique(adata.var_names, "feature name", str(folder / f"{k}_featname.csv"))
        validate.check_matrix(adata, f"{folder}/{k}_*.csv (modality {name!r})")
        mods[name] = adata
    if not mods:
        raise InputError(f"{folder}: no k_tr.csv matrices found (MOGONET layout)")
    for split in ("tr", "te"):
        split_counts = {
            f: n for f, n in counts.items() if f.endswith(f"_{split}.csv") and f[0].isdigit()
        }
        lab_file = f"labels_{split}.csv"
        if lab_file in counts:
            split_counts[lab_file] = counts[lab_file]
        if len(set(split_counts.values())) > 1:
            detail = ", ".join(f"{f}: {n}" for f, n in sorted(split_counts.items()))
            raise InputError(f"{folder}: row counts disagree between files ({detail})")
    n_tr = counts.get("1_tr.csv", 0)
    n_te = counts.get("1_te.csv", 0)
    ids = [f"{id_prefix}tr_{i:03d}" for i in range(n_tr)] + [
        f"{id_prefix}te_{i:03d}" for i in range(n_te)
    ]
    ann = pd.DataFrame(index=pd.Index(ids, name="sample"))
    if labels:
        lab_all = np.concatenate(
            [
                labels.get("tr", np.full(n_tr, np.nan, dtype=object)),
                labels.get("te", np.full(n_te, np.nan, dtype=object)),
            ]
        )
        ann["label"] = lab_all
    split = pd.Series(["train"] * n_tr + ["test"] * n_te, index=ann.index, dtype=object)
    return RawInput(
        mods=mods,
        annotations=ann,
        split=split if n_te else None,
        split_source="given (MOGONET layout: *_tr / *_te files)" if n_te else "",
        label_hint="label" if labels else None,
        source=f"MOGONET folder {folder}",
        uns={"_label_key": "labels_tr.csv / labels_te.csv"} if labels else {},
        notes=[
            f"{folder}: files have no sample IDs; rows named {id_prefix}tr_NNN / "
            f"{id_prefix}te_NNN by position; modalities named {', '.join(mods)}"
        ],
    )


# ------------------------------------------------------------------ Flexynesis layout


def is_flexynesis_dir(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir()


def _flexynesis_clin(folder: Path, split: str) -> pd.DataFrame | None:
    for cand in (folder / split / "clin.csv", folder / "clin.csv"):
        if cand.exists():
            return read_csv_frame(cand)
    return None


def read_flexynesis(folder: Path) -> RawInput:
    """Flexynesis layout: ``train/`` and ``test/`` with features x samples CSVs and ``clin.csv``."""
    mods: dict[str, ad.AnnData] = {}
    split_parts: list[pd.Series] = []
    clin_parts: list[pd.DataFrame] = []
    per_split: dict[str, dict[str, ad.AnnData]] = {}
    for split in ("train", "test"):
        sub = folder / split
        files = sorted(
            p
            for p in sub.iterdir()
            if p.is_file()
            and strip_compression(p)[0] in TABLE_SUFFIXES
            and not p.name.startswith("clin.")
        )
        per_split[split] = {
            p.name.split(".")[0]: read_table(p, p.name.split(".")[0], transpose=True) for p in files
        }
        clin = _flexynesis_clin(folder, split)
        if clin is not None:
            clin_parts.append(clin)
    names = list(per_split["train"])
    if not names:
        raise InputError(f"{folder}/train: no feature tables (expected e.g. gex.csv)")
    for name in names:
        parts = [per_split[s][name] for s in ("train", "test") if name in per_split[s]]
        mods[name] = concat_rows(parts, f"{folder}/*/{name}.csv", name)
        for s in ("train", "test"):
            if name in per_split[s]:
                split_parts.append(pd.Series(s, index=per_split[s][name].obs_names))
    extra = set(per_split["test"]) - set(names)
    if extra:
        raise InputError(f"{folder}/test: {sorted(extra)} not present in {folder}/train")
    split = pd.concat(split_parts)
    split = split[~split.index.duplicated()]
    ann = pd.DataFrame(index=pd.Index(split.index, name="sample"))
    if clin_parts:
        clin = pd.concat(clin_parts)
        clin = clin[~clin.index.duplicated(keep="first")]
        ann = clin
    return RawInput(
        mods=mods,
        annotations=ann,
        split=split,
        split_source="given (Flexynesis layout: train/ and test/)",
        source=f"Flexynesis folder {folder}",
    )


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
