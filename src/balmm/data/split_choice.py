"""The train/test split of the loaded samples, by precedence: ``--test`` (files of test IDs,
or NAME=PATH files holding the test samples of a modality), ``--split-col``, the input
layout, a ``split`` column, else a stratified split carved with ``test_size`` and ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from balmm.data import readers
from balmm.data.anndata_input import PerModality
from balmm.data.dataset import LABEL, SPLIT, TEST, TRAIN
from balmm.data.detect import merge_annotations, read_named_file
from balmm.data.labels import split_values
from balmm.data.precheck import parse_named
from balmm.data.splits import stratified_split
from balmm.errors import InputError


def apply_test_option(
    raw: readers.RawInput,
    test: list[str],
    layer: PerModality = None,
    var_key: PerModality = None,
) -> pd.Index:
    """Add NAME=PATH test files to their modality; return the test IDs (of those files and
    of the test-ID files)."""
    ids: list[str] = []
    id_files: list[Path] = []
    for spec in test:
        named = parse_named(spec)
        if named is not None and not Path(spec).exists():
            name, path = named
            if name not in raw.mods:
                raise InputError(
                    f"--test {spec}: {name!r} is not one of the modalities ({', '.join(raw.mods)})"
                )
            adata, obs = read_named_file(name, path, False, layer, var_key)
            clash = adata.obs_names.intersection(raw.mods[name].obs_names)
            if len(clash):
                raise InputError(
                    f"--test {spec}: sample {clash[0]!r} is also in the training file of "
                    f"modality {name!r}"
                )
            raw.mods[name] = readers.concat_rows([raw.mods[name], adata], str(path), name)
            if obs is not None and obs.shape[1]:
                raw.annotations = merge_annotations([raw.annotations, obs])
            ids += list(adata.obs_names)
        else:
            id_files.append(Path(spec))
    known = set().union(*(set(m.obs_names) for m in raw.mods.values()))
    for path in id_files:
        readers.check_exists(path, "--test file")
        listed = readers.read_id_list(path)
        # A header line is just an ID that matches nothing: drop it if it is the first row.
        if len(listed) > 1 and listed[0] not in known:
            listed = listed[1:]
        found = [i for i in listed if i in known]
        if not found:
            raise InputError(
                f"--test {path}: none of its {len(listed)} IDs is a sample of the inputs "
                f"(e.g. {listed[0]!r})"
            )
        if len(found) < len(listed):
            raw.notes.append(f"--test {path}: {len(listed) - len(found)} IDs not in the inputs")
        ids += found
    return pd.Index(pd.unique(pd.Index(ids)))


def resolve_split(
    raw: readers.RawInput,
    test_ids: pd.Index | None,
    test: list[str],
    table: pd.DataFrame,
    split_col: str | None,
    obs: pd.DataFrame,
    union: pd.Index,
    test_size: float,
    seed: int,
    notes: list[str],
) -> tuple[pd.Series, str]:
    stored_source = raw.uns.pop("_split_source", None)
    if test_ids is not None:
        split = pd.Series(TRAIN, index=union, dtype=object)
        split[union.isin(test_ids)] = TEST
        return split, f"given (--test {' '.join(test)})"
    col = split_col if split_col is not None else (SPLIT if SPLIT in table.columns else None)
    if col is not None:
        split = split_values(table[col].reindex(union), col)
        unknown = split.isna()
        if unknown.all():
            raise InputError(f"split column {col!r}: no sample of the inputs has a value")
        if unknown.any():
            notes.append(
                f"{int(unknown.sum())} samples have no value in split column {col!r}: "
                "treated as train"
            )
            split[unknown] = TRAIN
        if stored_source and split_col is None:
            return split, stored_source
        return split, f"given (column {col!r})"
    if raw.split is not None:
        split = raw.split.reindex(union).fillna(TRAIN).astype(object)
        return split, raw.split_source
    labelled = obs.index[obs[LABEL].notna().to_numpy()]
    split = pd.Series(TRAIN, index=union, dtype=object)
    if len(labelled) >= 2:
        lab = obs.loc[labelled, LABEL].astype(str)
        _, held = stratified_split(labelled, lab.to_numpy(), test_size, seed)
        split[held] = TEST
        # A carved split must leave every class 2 training samples (checked later): tiny
        # classes give their test samples back to train, and the report says so.
        counts = lab.value_counts()
        for cls, n in counts.items():
            members = lab.index[lab.to_numpy() == cls]
            in_test = members[split[members].to_numpy() == TEST]
            give_back = min(len(in_test), max(0, 2 - (n - len(in_test))))
            if give_back:
                split[in_test[:give_back]] = TRAIN
                notes.append(
                    f"class {cls!r} has only {n} labelled samples: {give_back} moved from the "
                    "carved test split back to train (a class needs 2 training samples)"
                )
        how = "stratified" if counts.min() >= 2 else "random"
        return split, f"carved ({how}, test_size={test_size}, seed={seed})"
    if len(union) >= 2:
        _, held = stratified_split(union, np.zeros(len(union)), test_size, seed)
        split[held] = TEST
    return split, f"carved (random, unlabelled, test_size={test_size}, seed={seed})"
