"""Read INPUTS into a :class:`MultiOmicsData`: detect the format, pair, label, split, validate.

Entry points: :func:`load_inputs` (every INPUTS form of the CLI), :func:`read_h5mu`,
:func:`write_h5mu` and :func:`example_path`.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from balmm.data import readers, validate
from balmm.data.anndata_input import (
    PerModality,
    check_spec_names,
    for_modality,
    from_anndata,
    from_mudata,
)
from balmm.data.dataset import LABEL, SPLIT, TEST, TRAIN, MultiOmicsData
from balmm.data.h5mu import read_h5mu_raw, write_h5mu
from balmm.data.labels import choose_label_column, normalise_labels, split_values
from balmm.data.layouts import is_flexynesis_dir, is_mogonet_dir, read_flexynesis, read_mogonet
from balmm.data.precheck import early_labels, parse_named
from balmm.data.splits import stratified_split
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

EXAMPLES = {"rosmap": "rosmap.h5mu"}


def example_path(name: str = "rosmap") -> Path:
    """Path of a bundled example dataset (``rosmap``), shipped as package data."""
    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    path = Path(str(importlib.resources.files("balmm") / "example_data" / EXAMPLES[name]))
    if not path.exists():
        raise InputError(f"bundled example {path} is missing (broken installation?)")
    return path


# ------------------------------------------------------------------------------ h5mu


def read_h5mu(path: str | os.PathLike[str]) -> MultiOmicsData:
    """Read a MuData file (labels/split from ``.obs`` columns ``label``/``split`` if present)."""
    return load_inputs([str(path)], require_labels=False)


# -------------------------------------------------------------------- detect and read


def _read_named_file(
    name: str,
    path: Path,
    no_ids: bool = False,
    layer: PerModality = None,
    var_key: PerModality = None,
    backed: bool | None = False,
) -> tuple[ad.AnnData, pd.DataFrame | None]:
    readers.check_exists(path, f"input {name}={path}:")
    suffix, _ = readers.strip_compression(path)
    if path.is_dir():
        raise InputError(f"input {name}={path}: a folder, expected a .csv/.tsv/.h5ad file")
    lay, mask = for_modality(layer, name), for_modality(var_key, name)
    if suffix == ".h5ad":
        return readers.read_h5ad_file(path, name, lay, mask, backed)
    if suffix in readers.TABLE_SUFFIXES:
        if lay is not None or mask is not None:
            what = "--layer" if lay is not None else "--var-key"
            raise InputError(f"input {name}={path}: {what} needs an .h5ad or .h5mu input")
        return readers.read_table(path, name, no_ids=no_ids), None
    raise InputError(
        f"input {name}={path}: unknown extension {''.join(path.suffixes) or '(none)'!r} "
        "(expected .csv, .tsv, .txt, optionally .gz, or .h5ad)"
    )


def _is_in_memory(inputs: object) -> bool:
    if isinstance(inputs, ad.AnnData | Mapping):
        return True
    return hasattr(inputs, "mod") and hasattr(inputs, "obs")  # MuData, without importing it


def _read_in_memory(inputs: object, layer: PerModality, var_key: PerModality) -> readers.RawInput:
    if isinstance(inputs, ad.AnnData | Mapping):
        return from_anndata(inputs, "in-memory AnnData", layer, var_key)  # type: ignore[arg-type]
    return from_mudata(inputs, "in-memory MuData", layer, var_key)


def _read_inputs(
    inputs: list[str],
    no_ids: bool = False,
    layer: PerModality = None,
    var_key: PerModality = None,
    backed: bool | None = False,
) -> readers.RawInput:
    if not inputs:
        raw = read_h5mu_raw(example_path("rosmap"), layer, var_key, backed)
        raw.source = f"bundled example {example_path('rosmap').name} ({raw.source})"
        return raw
    named = [parse_named(s) for s in inputs]
    if all(n is not None for n in named):
        names = [n[0] for n in named]  # type: ignore[index]
        validate.check_modality_names(names)
        check_spec_names(layer, names, "--layer")
        check_spec_names(var_key, names, "--var-key")
        mods, ann = {}, []
        for name, path in named:  # type: ignore[misc]
            mods[name], obs = _read_named_file(name, path, no_ids, layer, var_key, backed)
            if obs is not None and obs.shape[1]:
                ann.append(obs)
        return readers.RawInput(
            mods=mods,
            annotations=_merge_annotations(ann),
            source="NAME=PATH: " + ", ".join(inputs),
        )
    if len(inputs) > 1:
        bad = next(s for s, n in zip(inputs, named, strict=True) if n is None)
        raise InputError(
            f"input {bad!r}: with several INPUTS each must be NAME=PATH (only one .h5mu file "
            "or one folder can be given on its own)"
        )
    path = Path(inputs[0])
    readers.check_exists(path, "input")
    if path.is_dir():
        if layer is not None or var_key is not None:
            what = "--layer" if layer is not None else "--var-key"
            raise InputError(f"input folder {path}: {what} needs an .h5ad or .h5mu input")
        if is_mogonet_dir(path):
            return read_mogonet(path)
        if is_flexynesis_dir(path):
            return read_flexynesis(path)
        raise InputError(
            f"input folder {path}: neither MOGONET layout (1_tr.csv, labels_tr.csv, ...) nor "
            "Flexynesis layout (train/, test/)"
        )
    suffix, _ = readers.strip_compression(path)
    if suffix == ".h5mu":
        return read_h5mu_raw(path, layer, var_key, backed)
    if suffix in (".h5ad", *readers.TABLE_SUFFIXES):
        raise InputError(f"input {path}: a single {suffix} file needs a modality name: NAME={path}")
    raise InputError(
        f"input {path}: unknown extension {''.join(path.suffixes) or '(none)'!r} (expected "
        ".h5mu, a folder, or NAME=PATH with .csv/.tsv/.h5ad)"
    )


def _merge_annotations(frames: list[pd.DataFrame]) -> pd.DataFrame:
    out: pd.DataFrame | None = None
    for f in frames:
        out = f if out is None else out.combine_first(f)
    return out if out is not None else pd.DataFrame()


# -------------------------------------------------------------------------- main


def _check_positional(raw: readers.RawInput, labels: list[Path]) -> None:
    """With --no-ids every file must have the same number of rows."""
    counts = {f"modality {n!r}": m.n_obs for n, m in raw.mods.items()}
    for p in labels:
        counts[str(p)] = len(readers.read_csv_frame(p, index=False))
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise InputError(f"--no-ids needs files with equal row counts; got {detail}")
    raw.notes.append("--no-ids: samples paired by row position and named row_0001, ...")


def _apply_test_option(
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
            adata, obs = _read_named_file(name, path, False, layer, var_key)
            clash = adata.obs_names.intersection(raw.mods[name].obs_names)
            if len(clash):
                raise InputError(
                    f"--test {spec}: sample {clash[0]!r} is also in the training file of "
                    f"modality {name!r}"
                )
            raw.mods[name] = readers.concat_rows([raw.mods[name], adata], str(path), name)
            if obs is not None and obs.shape[1]:
                raw.annotations = _merge_annotations([raw.annotations, obs])
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
    if _is_in_memory(inputs):
        raw = _read_in_memory(inputs, layer, var_key)
    else:
        early = early_labels(list(inputs), labels, label_col, split_col, no_ids, require_labels)  # type: ignore[arg-type]
        raw = _read_inputs(list(inputs), no_ids, layer, var_key, backed)  # type: ignore[arg-type]
    if no_ids:
        _check_positional(raw, labels)
    test_ids = _apply_test_option(raw, test, layer, var_key) if test else None
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
    table = _merge_annotations([t for t in (label_table, raw.annotations) if t.shape[1]])
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
            if _is_in_memory(inputs):
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
    split, split_source = _resolve_split(
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


def _resolve_split(
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
