"""MuData (.h5mu) files: balmm's on-disk container (written by ``balmm convert``)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import pandas as pd

from balmm.data import readers
from balmm.data.anndata_input import PerModality, from_mudata
from balmm.data.dataset import LABEL, SPLIT, MultiOmicsData
from balmm.errors import InputError
from balmm.outputs import atomic_file

META_KEY = "balmm"  # .uns key holding balmm's own metadata as a JSON string


def _quiet() -> None:
    # Modalities may share feature names (same genes in RNA and CNV); that is fine here.
    warnings.filterwarnings("ignore", message="var_names are not unique")
    warnings.filterwarnings("ignore", message="obs_names are not unique")


def write_h5mu(data: MultiOmicsData, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as one gzip-compressed ``.h5mu`` (atomically: temp file + rename).

    Modalities become mods; ``label`` and ``split`` become global ``.obs`` columns;
    balmm's metadata (label key and mapping, split source, ...) is JSON in ``.uns['balmm']``;
    ``data.uns`` entries are stored as further ``.uns`` keys.
    """
    path = Path(path)
    mods = {}
    for name, m in data.mods.items():
        mods[name] = ad.AnnData(
            X=m.X,
            obs=pd.DataFrame(index=pd.Index(m.obs_names.astype(str), name="sample")),
            var=pd.DataFrame(index=pd.Index(m.var_names.astype(str), name="feature")),
        )
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        _quiet()
        mdata = md.MuData(mods)
    obs = data.obs.reindex(mdata.obs_names)
    mdata.obs = pd.DataFrame(index=pd.Index(mdata.obs_names, name="sample"))
    for col in (LABEL, SPLIT):
        if col in obs:
            # Categorical keeps NaN (unlabelled) distinct from the string "nan" in HDF5.
            mdata.obs[col] = pd.Categorical(obs[col].where(obs[col].notna(), None))
    meta = {
        "format": 1,
        "label_key": data.label_key,
        "label_mapping": data.label_mapping,
        "split_source": data.split_source,
        "source": data.source,
        "notes": data.notes,
        "obs_order": list(data.obs.index),
    }
    mdata.uns[META_KEY] = json.dumps(meta)
    for key, value in data.uns.items():
        if key != META_KEY:
            mdata.uns[key] = value
    # pandas >= 3 types string indexes as nullable strings, which anndata writes only
    # when allowed (files stay readable by anndata >= 0.11)
    with (
        atomic_file(path, suffix=".tmp.h5mu") as tmp,
        md.set_options(pull_on_update=False),
        ad.settings.override(allow_write_nullable_strings=True),
        warnings.catch_warnings(),
    ):
        _quiet()
        mdata.write(tmp, compression="gzip")
    return path


def read_h5mu_raw(
    path: Path, layer: PerModality = None, var_key: PerModality = None, backed: bool | None = False
) -> readers.RawInput:
    """A .h5mu file as raw input; ``backed`` leaves the matrices on disk (mudata backed
    mode), None only when one of them is large (``readers.BACKED_AUTO_BYTES``)."""
    readers.check_exists(path)
    if backed is None:
        backed = _large(path)
    try:
        try:
            with md.set_options(pull_on_update=False), warnings.catch_warnings():
                _quiet()
                mdata = md.read_h5mu(path, backed=bool(backed))
        except ValueError:
            # mudata 0.3 fails to join obs without pulling when a mod's obs index has another
            # name than the global one (e.g. 'sample' vs none); its default reading works
            with warnings.catch_warnings():
                _quiet()
                warnings.simplefilter("ignore", FutureWarning)
                mdata = md.read_h5mu(path)
    except Exception as exc:  # h5py/mudata raise many types for damaged files
        raise InputError(f"{path}: not a readable .h5mu file ({type(exc).__name__})") from exc
    if not mdata.mod:
        raise InputError(f"{path}: the .h5mu file holds no modality")
    raw = from_mudata(mdata, f"MuData file {path}", layer, var_key)
    return raw


def _large(path: Path) -> bool:
    """Does any mod's X of the .h5mu exceed ``readers.BACKED_AUTO_BYTES`` in memory?"""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = [f"mod/{n}" for n in f.get("mod", {})]
    except OSError:
        return False
    return readers.stored_x_bytes(path, names) > readers.BACKED_AUTO_BYTES


def apply_stored_meta(raw: readers.RawInput, uns: dict) -> None:
    """balmm's metadata (JSON in ``.uns['balmm']``, written by :func:`write_h5mu`) onto
    ``raw``; other ``.uns`` keys are carried as they are."""
    meta: dict = {}
    stored = uns.get(META_KEY)
    if isinstance(stored, str):
        try:
            meta = json.loads(stored)
        except json.JSONDecodeError:
            meta = {}
    raw.uns.update({k: v for k, v in uns.items() if k != META_KEY})
    raw.source = meta.get("source") or raw.source
    raw.notes = list(meta.get("notes", []))
    raw.label_mapping = dict(meta.get("label_mapping") or {})
    if meta.get("label_key"):
        raw.uns["_label_key"] = meta["label_key"]
    if meta.get("split_source"):
        raw.uns["_split_source"] = meta["split_source"]
    if meta.get("obs_order"):
        raw.uns["_obs_order"] = list(meta["obs_order"])
