"""Pairing of samples across modalities (by sample ID): the table and its summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from balmm.data.dataset import LABEL, SPLIT, MultiOmicsData


def pairing_table(data: MultiOmicsData) -> pd.DataFrame:
    """One row per sample: one boolean column per modality (measured or not), ``n_modalities``,
    ``complete`` (has every modality), ``label`` and ``split``."""
    table = data.presence()
    table["n_modalities"] = table.sum(axis=1).astype(int)
    table["complete"] = table["n_modalities"] == len(data.mods)
    for col in (LABEL, SPLIT):
        if col in data.obs:
            table[col] = data.obs[col]
    return table


def pairing_summary(data: MultiOmicsData) -> dict:
    """Counts for reports: samples, complete (matched in all), per-modality present/missing,
    per split, unlabelled, and the number of samples with each modality combination."""
    pres = data.presence()
    n = len(pres)
    complete = pres.all(axis=1)
    # Count each distinct presence pattern once (fast for single-cell sized tables).
    combos: dict[str, int] = {}
    for pattern, count in pres.value_counts().items():
        key = "+".join(c for c, has in zip(pres.columns, pattern, strict=True) if has)
        combos[key or "(none)"] = int(count)
    per_split: dict[str, dict] = {}
    if SPLIT in data.obs:
        groups = data.obs.groupby(SPLIT, sort=True).groups
        for split in sorted(groups, key=lambda v: (v != "train", str(v))):
            idx = groups[split]
            sub = pres.loc[idx]
            per_split[str(split)] = {
                "n_samples": int(len(sub)),
                "complete": int(sub.all(axis=1).sum()),
                "present": {m: int(sub[m].sum()) for m in pres.columns},
            }
    n_unlabelled = int(data.obs[LABEL].isna().sum()) if LABEL in data.obs else n
    return {
        "n_samples": int(n),
        "n_modalities": len(pres.columns),
        "complete": int(complete.sum()),
        "partial": int(n - complete.sum()),
        "modalities": {
            m: {"present": int(pres[m].sum()), "missing": int(n - pres[m].sum())}
            for m in pres.columns
        },
        "combinations": combos,
        "per_split": per_split,
        "unlabelled": n_unlabelled,
    }


def input_order(order: pd.Index, ids: pd.Index | pd.Series | list[str]) -> np.ndarray:
    """Row positions that put ``ids`` in the order of ``order`` (the input's sample order);
    IDs not in ``order`` go last, in their own order. Outputs are reindexed with it so that
    every file lists samples as the input did."""
    pos = pd.Index(order).get_indexer(pd.Index(ids))
    return np.argsort(np.where(pos < 0, len(order), pos), kind="stable")
