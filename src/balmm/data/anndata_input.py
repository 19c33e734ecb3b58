"""AnnData and MuData as inputs, in memory or read from .h5ad/.h5mu: the matrix of each
modality (``.X`` or a layer), an optional boolean ``.var`` feature mask, and ``.obs``.

``layer`` and ``var_key`` are either one name for every modality or a dict
``{modality: name}`` (modalities not in the dict use ``.X`` / every feature).
"""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd

from balmm.data import readers, validate
from balmm.data.validate import check_modality_names
from balmm.errors import InputError

PerModality = str | Mapping[str, str] | None


def parse_per_modality(items: list[str] | None, option: str) -> PerModality:
    """CLI ``--layer [NAME=]LAYER`` (repeatable) -> one name for all, or {modality: name}."""
    if not items:
        return None
    plain = [s for s in items if "=" not in s]
    named = [s.partition("=") for s in items if "=" in s]
    if plain and (named or len(plain) > 1):
        raise InputError(
            f"{option}: give one value for every modality or NAME=VALUE per modality, not both "
            f"({', '.join(items)})"
        )
    if plain:
        return plain[0]
    out: dict[str, str] = {}
    for name, _, value in named:
        if not name or not value:
            raise InputError(f"{option} {name}={value}: expected NAME=VALUE")
        if name in out:
            raise InputError(f"{option}: modality {name!r} given twice")
        out[name] = value
    return out


def for_modality(spec: PerModality, name: str) -> str | None:
    if spec is None or isinstance(spec, str):
        return spec
    return spec.get(name)


def check_spec_names(spec: PerModality, names: list[str], option: str) -> None:
    """A per-modality dict may only name modalities of the input."""
    if isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in names]
        if unknown:
            raise InputError(
                f"{option}: {unknown[0]!r} is not a modality of the input "
                f"(modalities: {', '.join(names)})"
            )


def select_matrix(
    adata: ad.AnnData, where: str, layer: str | None = None, var_key: str | None = None
) -> ad.AnnData:
    """A validated float32 AnnData of ``adata``'s ``.X`` (or ``layer``), restricted to the
    features where ``.var[var_key]`` is True, keeping ``.obs`` (a float32 matrix is not
    copied unless the feature mask subsets it)."""
    if layer is None:
        x = adata.X
    elif layer in adata.layers:
        x = adata.layers[layer]
    else:
        have = ", ".join(adata.layers) or "none"
        raise InputError(f"{where}: no layer {layer!r} (layers: {have})")
    var_names = adata.var_names
    if var_key is not None:
        if var_key not in adata.var.columns:
            cols = ", ".join(map(str, adata.var.columns)) or "none"
            raise InputError(f"{where}: no .var column {var_key!r} (columns: {cols})")
        col = adata.var[var_key]
        if col.isna().any() or not (
            pd.api.types.is_bool_dtype(col) or set(pd.unique(col)) <= {0, 1}
        ):
            raise InputError(f"{where}: .var column {var_key!r} is not boolean (True/False)")
        keep = col.to_numpy(dtype=bool)
        if not keep.any():
            raise InputError(f"{where}: .var column {var_key!r} selects no feature")
        x = x[:, np.flatnonzero(keep)] if x is not None else None
        var_names = var_names[keep]
    out = readers.clean_anndata(x, adata.obs_names, var_names, where)
    obs = adata.obs.copy()
    obs.index = out.obs_names
    out.obs = obs
    if layer is not None:
        # the preprocessor reads this: counts from a layer get HVG 'seurat_v3' on raw counts
        out.uns["balmm_layer"] = layer
    return out


def select_backed(
    adata: ad.AnnData, where: str, layer: str | None = None, var_key: str | None = None
) -> ad.AnnData:
    """A backed (on-disk) AnnData as one modality: ``.X`` stays in the file and is read in
    row chunks by the preprocessing; sample IDs and feature names are checked as for an
    in-memory matrix."""
    if layer is not None or var_key is not None:
        what = "--layer" if layer is not None else "--var-key"
        raise InputError(f"{where}: {what} needs the matrix in memory; run without --backed")
    if adata.X is None:
        raise InputError(f"{where}: the file has no X matrix")
    dtype = np.dtype(getattr(adata.X, "dtype", np.float32))
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise InputError(f"{where}: X is not numeric ({dtype})")
    obs = adata.obs.copy()
    obs.index = pd.Index(adata.obs_names.astype(str), name="sample")
    adata.obs = obs
    adata.var = pd.DataFrame(index=pd.Index(adata.var_names.astype(str), name="feature"))
    validate.check_unique(adata.obs_names, "sample ID", where)
    validate.check_unique(adata.var_names, "feature name", where)
    validate.check_matrix(adata, where)
    return adata


def from_mudata(
    mdata: object, source: str, layer: PerModality = None, var_key: PerModality = None
) -> readers.RawInput:
    """A MuData (in memory or just read) as balmm's raw input: one AnnData per mod; the
    global ``.obs`` plus each mod's ``.obs`` columns (as ``mod:column``) are annotations."""
    mods_in: Mapping[str, ad.AnnData] = mdata.mod  # type: ignore[attr-defined]
    if not mods_in:
        raise InputError(f"{source}: the MuData holds no modality")
    names = list(mods_in)
    check_spec_names(layer, names, "layer")
    check_spec_names(var_key, names, "var_key")
    select = select_backed if getattr(mdata, "isbacked", False) else select_matrix
    mods = {
        name: select(
            m,
            f"{source} (modality {name!r})",
            for_modality(layer, name),
            for_modality(var_key, name),
        )
        for name, m in mods_in.items()
    }
    obs = mdata.obs.copy()  # type: ignore[attr-defined]
    obs.index = obs.index.astype(str)
    obs = _with_modality_obs(obs, mods)
    order = list(obs.index)
    for col in obs.columns:
        if isinstance(obs[col].dtype, pd.CategoricalDtype):
            obs[col] = obs[col].astype(object)
    raw = readers.RawInput(mods=mods, annotations=obs, source=source)
    raw.label_hint = "label" if "label" in obs.columns else None
    if order:
        raw.uns["_obs_order"] = order
    from balmm.data.h5mu import apply_stored_meta

    apply_stored_meta(raw, dict(mdata.uns))  # type: ignore[attr-defined]
    return raw


def from_anndata(
    adatas: ad.AnnData | Mapping[str, ad.AnnData],
    source: str,
    layer: PerModality = None,
    var_key: PerModality = None,
) -> readers.RawInput:
    """One AnnData (one modality, named after its ``uns['modality']`` or ``data``) or a dict
    of AnnData as raw input; each one's ``.obs`` columns are annotations."""
    if isinstance(adatas, ad.AnnData):
        adatas = {str(adatas.uns.get("modality", "data")): adatas}
    if not adatas:
        raise InputError(f"{source}: no modality (an empty dict)")
    for name, m in adatas.items():
        if not isinstance(m, ad.AnnData):
            raise InputError(f"{source}: modality {name!r} is a {type(m).__name__}, not AnnData")
    names = [str(n) for n in adatas]
    check_modality_names(names)
    check_spec_names(layer, names, "layer")
    check_spec_names(var_key, names, "var_key")
    mods = {
        str(name): select_matrix(
            m,
            f"{source} (modality {name!r})",
            for_modality(layer, name),
            for_modality(var_key, name),
        )
        for name, m in adatas.items()
    }
    frames = [m.obs for m in mods.values() if m.obs.shape[1]]
    ann: pd.DataFrame = pd.DataFrame()
    for f in frames:
        ann = f.copy() if not ann.shape[1] else ann.combine_first(f)
    raw = readers.RawInput(mods=mods, annotations=ann, source=source)
    if len(mods) == 1:
        raw.uns["_obs_order"] = list(next(iter(mods.values())).obs_names)
    return raw


def _with_modality_obs(obs: pd.DataFrame, mods: dict[str, ad.AnnData]) -> pd.DataFrame:
    """Add each mod's ``.obs`` columns as ``mod:column`` where the global ``.obs`` lacks
    them (MuData's own naming after ``update()``)."""
    extra = {}
    for name, m in mods.items():
        for col in m.obs.columns:
            key = f"{name}:{col}"
            if key not in obs.columns:
                extra[key] = m.obs[col].reindex(obs.index)
    if not extra:
        return obs
    return pd.concat([obs, pd.DataFrame(extra, index=obs.index)], axis=1)
