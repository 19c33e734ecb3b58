"""Detect which INPUTS form was given and read it raw (:class:`balmm.data.readers.RawInput`):
the bundled example, one .h5mu file, a MOGONET or Flexynesis folder, NAME=PATH files
(.csv/.tsv/.h5ad), or in-memory MuData/AnnData. Pairing, labels and the split come after,
in :func:`balmm.data.io.load_inputs`.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import pandas as pd

from balmm.data import readers, validate
from balmm.data.anndata_input import (
    PerModality,
    check_spec_names,
    for_modality,
    from_anndata,
    from_mudata,
)
from balmm.data.h5mu import read_h5mu_raw
from balmm.data.layouts import is_flexynesis_dir, is_mogonet_dir, read_flexynesis, read_mogonet
from balmm.data.precheck import parse_named
from balmm.errors import InputError

EXAMPLES = {"rosmap": "rosmap.h5mu"}


def example_path(name: str = "rosmap") -> Path:
    """Path of a bundled example dataset (``rosmap``), shipped as package data."""
    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    path = Path(str(importlib.resources.files("balmm") / "example_data" / EXAMPLES[name]))
    if not path.exists():
        raise InputError(f"bundled example {path} is missing (broken installation?)")
    return path


def read_named_file(
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


def is_in_memory(inputs: object) -> bool:
    if isinstance(inputs, ad.AnnData | Mapping):
        return True
    return hasattr(inputs, "mod") and hasattr(inputs, "obs")  # MuData, without importing it


def read_in_memory(inputs: object, layer: PerModality, var_key: PerModality) -> readers.RawInput:
    if isinstance(inputs, ad.AnnData | Mapping):
        return from_anndata(inputs, "in-memory AnnData", layer, var_key)  # type: ignore[arg-type]
    return from_mudata(inputs, "in-memory MuData", layer, var_key)


def read_inputs(
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
            mods[name], obs = read_named_file(name, path, no_ids, layer, var_key, backed)
            if obs is not None and obs.shape[1]:
                ann.append(obs)
        return readers.RawInput(
            mods=mods,
            annotations=merge_annotations(ann),
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


def merge_annotations(frames: list[pd.DataFrame]) -> pd.DataFrame:
    out: pd.DataFrame | None = None
    for f in frames:
        out = f if out is None else out.combine_first(f)
    return out if out is not None else pd.DataFrame()
