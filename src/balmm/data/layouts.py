"""Folder layouts: MOGONET (headerless k_tr/k_te matrices) and Flexynesis (train/, test/)."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from balmm.data import validate
from balmm.data.readers import (
    TABLE_SUFFIXES,
    RawInput,
    concat_rows,
    read_csv_frame,
    read_table,
    strip_compression,
)
from balmm.errors import InputError

logger = logging.getLogger("balmm")


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
            X=np.vstack(parts),  # float32 already (numeric_values); vstack copies
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
            if not split_counts:
                raise InputError(
                    f"{folder}: {lab_file} has {counts[lab_file]} rows but there is no "
                    f"k_{split}.csv matrix for them"
                )
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
