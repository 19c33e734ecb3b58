"""Checks that run before any matrix is read: size caps, header rows and labels of
NAME=PATH text tables (a wrong --label-col fails in seconds, not after minutes of parsing)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from balmm.data import readers
from balmm.data.labels import choose_label_column
from balmm.errors import InputError


def parse_named(spec: str) -> tuple[str, Path] | None:
    """``NAME=PATH`` -> (name, path); None when ``spec`` is not of that form."""
    if "=" not in spec:
        return None
    name, _, path = spec.partition("=")
    if not name or os.sep in name:
        return None
    return name.strip(), Path(path)


def early_labels(
    inputs: list[str],
    labels: list[Path],
    label_col: str | None,
    split_col: str | None,
    no_ids: bool,
    require_labels: bool,
) -> pd.DataFrame | None:
    """NAME=PATH text tables carry no labels: check their size caps and header rows, and the
    labels, before any matrix is read (a wrong --label-col fails in seconds, not after
    minutes of parsing). Returns the --labels table, or None for other inputs."""
    named = [parse_named(s) for s in inputs]
    if not named or any(n is None for n in named):
        return None
    for _, path in named:  # type: ignore[misc]
        suffix, _ = readers.strip_compression(path)
        if suffix not in readers.TABLE_SUFFIXES or not path.is_file():
            return None  # other formats (or missing files) are reported by the readers
    for name, path in named:  # type: ignore[misc]
        readers.check_table_header(path, name, no_ids)
    table = readers.read_annotation_files(labels, no_ids) if labels else pd.DataFrame()
    where = ", ".join(str(p) for p in labels) if labels else "NAME=PATH: " + ", ".join(inputs)
    key = choose_label_column(table, label_col, None, split_col, where, require_labels)
    if key is None and require_labels:
        raise InputError(
            f"no labels found in {where}: give --labels FILE (first column = sample ID)"
            + (" and --label-col COL" if table.shape[1] else "")
        )
    return table
