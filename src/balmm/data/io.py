"""Read INPUTS into a :class:`MultiOmicsData`: detect the format, pair, label, split, validate.

Entry points: :func:`load_inputs` (every INPUTS form of the CLI), :func:`read_h5mu`,
:func:`write_h5mu` and :func:`example_path`. Detecting and reading the INPUTS form is
:mod:`balmm.data.detect`; choosing the train/test split is :mod:`balmm.data.split_choice`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from balmm.data import readers, validate
from balmm.data.anndata_input import PerModality
from balmm.data.dataset import LABEL, SPLIT, MultiOmicsData
from balmm.data.detect import (
    example_path,
    is_in_memory,
    merge_annotations,
    read_in_memory,
    read_inputs,
)
from balmm.data.h5mu import write_h5mu
from balmm.data.labels import choose_label_column, normalise_labels
from balmm.data.precheck import early_labels
from balmm.data.split_choice import apply_test_option, resolve_split
from balmm.errors import InputError

logger = logging.getLogger("balmm")

__all__ = [
    "example_path",
    "load_inputs",
    "normalise_labels",
    "read_h5mu",
    "write_h5mu",
]

# MuData, AnnData or dict of AnnData (MuData is not imported here: it is slow to import)
InMemory = Any


def read_h5mu(path: str | os.PathLike[str]) -> MultiOmicsData:
    """Read a MuData file (labels/split from ``.obs`` columns ``label``/``split`` if present)."""
    return load_inputs([str(path)], require_labels=False)


def _check_positional(raw: readers.RawInput, labels: list[Path]) -> None:
    """With --no-ids every file must have the same number of rows."""
    counts = {f"modality {n!r}": m.n_obs for n, m in raw.mods.items()}
    for p in labels:
        counts[str(p)] = len(readers.read_csv_frame(p, index=False))
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise InputError(f"--no-ids needs files with equal row counts; got {detail}")
    raw.notes.append("--no-ids: samples paired by row position and named row_0001, ...")


def load_inputs(
    inputs: list[str] | InMemory,
    labels: list[Path] | None = None,
    label_col: str | None = None,
    test: list[str] | None = None,
    split_col: str | None = None,
    test_size: float = 0.3,
    seed: int = 0,
    require_labels: bool = True,
    no_ids: bool = False,
    layer: PerModality = None,
    var_key: PerModality = None,
    backed: bool | None = False,
) -> MultiOmicsData:
    """Read INPUTS (see the CLI help) into a validated :class:`MultiOmicsData`.

    Args:
        inputs: ``[]`` (bundled ROSMAP example), ``[file.h5mu]``, ``[folder]`` (MOGONET or
            Flexynesis layout) or ``["NAME=PATH", ...]`` with .csv/.tsv(.gz)/.h5ad files;
            or in memory: a MuData, an AnnData (one modality) or a dict of AnnData (their
            matrices are used as they are when float32, not copied).
        labels: label/annotation CSVs (first column = sample ID), stacked.
        label_col: the column holding the label (of ``labels``, ``.obs`` or ``clin.csv``).
        test: test sample-ID files, or ``NAME=PATH`` files holding the test samples of NAME.
        split_col: column with train/test per sample.
        test_size, seed: the stratified test split carved when none is given.
        require_labels: raise when no usable label (2+ classes, 2+ training samples each).
        no_ids: NAME=PATH and ``labels`` files have no sample-ID column; rows are paired by
            position (every file must have the same number of rows).
        layer: read this layer instead of ``.X`` (AnnData/MuData inputs): one name for
            every modality or ``{modality: layer}``.
        var_key: a boolean ``.var`` column selecting the features to use (e.g.
            ``highly_variable``): one name or ``{modality: column}``.
        backed: leave .h5ad/.h5mu matrices on disk (anndata backed mode; preprocessing and
            training read them in chunks); None: only matrices larger than
            ``readers.BACKED_AUTO_BYTES`` (4 GiB as float32). Other formats are read whole.

    Raises:
        InputError: naming the file, sample, feature or key at fault.
    """
    labels = [Path(p) for p in (labels or [])]
    test = list(test or [])
    early = None
    if is_in_memory(inputs):
        raw = read_in_memory(inputs, layer, var_key)
    else:
        early = early_labels(list(inputs), labels, label_col, split_col, no_ids, require_labels)  # type: ignore[arg-type]
        raw = read_inputs(list(inputs), no_ids, layer, var_key, backed)  # type: ignore[arg-type]
    if no_ids:
        _check_positional(raw, labels)
    test_ids = apply_test_option(raw, test, layer, var_key) if test else None
    mods = raw.mods
    raw.notes += validate.drop_unmeasured_rows(mods)
    validate.check_shared_samples(mods)

    # Union of samples in modality order (the MuData order, so convert round-trips).
    order = raw.uns.pop("_obs_order", None)
    union = pd.Index(pd.unique(np.concatenate([m.obs_names.to_numpy() for m in mods.values()])))
    if order is not None and set(order) == set(union):
        union = pd.Index(order)
    union.name = "sample"
    obs = pd.DataFrame(index=union)

    # Annotation table: --labels files first, then what the format carried.
    if early is not None:
        label_table = early
    else:
        label_table = readers.read_annotation_files(labels, no_ids) if labels else pd.DataFrame()
    table = merge_annotations([t for t in (label_table, raw.annotations) if t.shape[1]])
    where = ", ".join(str(p) for p in labels) if labels else (raw.source or "the inputs")
    if split_col is not None and split_col not in table.columns:
        cols = ", ".join(map(str, table.columns)) or "none"
        raise InputError(f"split column {split_col!r} not found in {where} (columns: {cols})")
    if labels and len(table) and not table.index.isin(union).any():
        raise InputError(
            f"--labels {where}: none of its {len(table)} sample IDs is a sample of the inputs "
            f"(labels like {table.index[0]!r}, inputs like {union[0]!r})"
        )
    key = choose_label_column(table, label_col, raw.label_hint, split_col, where, require_labels)
    notes = list(raw.notes)
    label_mapping: dict[str, str] = {}
    label_key: str | None = None
    if key is not None:
        lab, label_mapping = normalise_labels(table[key].reindex(union))
        if key == LABEL and raw.label_mapping:
            label_mapping = {c: raw.label_mapping.get(c, m) for c, m in label_mapping.items()}
        label_key = raw.uns.pop("_label_key", None) if key == LABEL else None
        label_key = label_key or (f"{key} ({', '.join(p.name for p in labels)})" if labels else key)
        obs[LABEL] = lab
        n_missing = int(lab.isna().sum())
        if n_missing == len(union) and require_labels:
            raise InputError(f"label {label_key!r}: no sample of the inputs has a label")
        if n_missing:
            notes.append(
                f"{n_missing} of {len(union)} samples have no label in {label_key!r}: kept for "
                "pairing and unsupervised steps, dropped from supervised training and scoring"
            )
        n_extra = int((~table.index.isin(union) & table[key].notna().to_numpy()).sum())
        if n_extra:
            notes.append(f"{n_extra} labelled samples of {where} are in no modality (ignored)")
    else:
        raw.uns.pop("_label_key", None)
        obs[LABEL] = pd.Series(np.nan, index=union, dtype=object)
        if require_labels:
            if is_in_memory(inputs):
                cols = ", ".join(map(str, table.columns)) or "none"
                raise InputError(
                    f"no labels found in {where}: give label_key=COLUMN of .obs (columns: {cols})"
                )
            raise InputError(
                f"no labels found in {where}: give --labels FILE (first column = sample ID)"
                + (" and --label-col COL" if table.shape[1] else "")
            )
        notes.append("no labels")

    # Split: --test, then --split-col, then the layout, then a 'split' column, else carve.
    split, split_source = resolve_split(
        raw, test_ids, test, table, split_col, obs, union, test_size, seed, notes
    )
    obs[SPLIT] = split
    if require_labels:
        validate.check_classes(obs[LABEL], obs[SPLIT], label_key or "label")
    data = MultiOmicsData(
        mods=mods,
        obs=obs,
        label_key=label_key,
        label_mapping=label_mapping,
        split_source=split_source,
        source=raw.source,
        notes=list(dict.fromkeys(notes)),  # a re-read .h5mu repeats its stored notes
        uns={k: v for k, v in raw.uns.items() if not k.startswith("_")},
    )
    for n in notes:
        logger.debug(n)
    return data
