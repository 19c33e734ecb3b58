"""Labels and split columns: class names, the label-column choice, train/test values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from balmm.data.dataset import LABEL, SPLIT, TEST, TRAIN
from balmm.errors import InputError

_SPLIT_WORDS = {
    "train": TRAIN,
    "training": TRAIN,
    "tr": TRAIN,
    "trn": TRAIN,
    "test": TEST,
    "testing": TEST,
    "te": TEST,
    "tst": TEST,
}


def _missing(v: object) -> bool:
    return v is None or (pd.api.types.is_scalar(v) and bool(pd.isna(v)))


def _class_name(v: object) -> str | None:
    if _missing(v):
        return None
    if isinstance(v, bool | np.bool_ | int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    cls = str(v).strip()
    return None if cls == "" or cls.lower() in ("nan", "na") else cls


def normalise_labels(values: pd.Series) -> tuple[pd.Series, dict[str, str]]:
    """Class strings (integer-valued numbers -> '0', '1', ...) and class -> original text."""
    mapping: dict[str, str] = {}
    # Work on distinct values only: label columns have few values but may have many rows.
    codes, uniques = pd.factorize(values.astype(object).to_numpy())  # missing -> code -1
    names = []
    for v in uniques:
        cls = _class_name(v)
        names.append(np.nan if cls is None else cls)
        if cls is not None:
            # Integer-valued numbers (0.0, 1) are their own class name; text keeps its spelling.
            mapping.setdefault(cls, cls if isinstance(v, int | float | np.number) else str(v))
    table = np.array([*names, np.nan], dtype=object)  # the last entry serves code -1
    out = pd.Series(table[codes], index=values.index, dtype=object)
    return out, dict(sorted(mapping.items()))


def choose_label_column(
    table: pd.DataFrame,
    label_col: str | None,
    hint: str | None,
    split_col: str | None,
    where: str,
    require: bool,
) -> str | None:
    if label_col is not None:
        if label_col not in table.columns:
            cols = ", ".join(map(str, table.columns)) or "none"
            raise InputError(f"label column {label_col!r} not found in {where} (columns: {cols})")
        return label_col
    if hint is not None and hint in table.columns:
        return hint
    if LABEL in table.columns:
        return LABEL
    cands = [c for c in table.columns if c not in (split_col, SPLIT)]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        return None
    if require:
        raise InputError(
            f"{where} has several columns that could be the label ({', '.join(cands[:8])}"
            f"{', ...' if len(cands) > 8 else ''}): choose one with --label-col"
        )
    return None


def split_values(col: pd.Series, key: str) -> pd.Series:
    words = col.dropna().astype(str).str.strip().str.lower().map(_SPLIT_WORDS)
    bad = words.index[words.isna()]
    if len(bad):
        sid = bad[0]
        raise InputError(
            f"split column {key!r}: sample {sid!r} has {col[sid]!r}; expected train or test"
        )
    return words.reindex(col.index).astype(object)
