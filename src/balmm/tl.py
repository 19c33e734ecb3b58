"""Tools in scanpy's style: MuData, AnnData or a dict of AnnData in, results written back.

``profile``, ``train`` and ``predict`` read the object with :func:`balmm.load` (nothing is
copied but the feature subsets asked for), run the same library code as the CLI, write their
results into the object, and return the result object:

============================  ===========================================================
``obsm["X_balmm"]``           fused embedding, one row per ``.obs`` row (NaN: not embedded)
``mod[m].obsm["X_balmm"]``    modality ``m``'s embedding, one row per row of the mod
``obs["balmm_prediction"]``   fused prediction (categorical); ``balmm_proba_<class>``,
                              ``balmm_split`` (train/val/test, unlabelled, or predict)
``uns["balmm"]``              ``profile`` and ``train`` summaries (JSON-like, writes to .h5mu)
============================  ===========================================================

A single AnnData is its own global object; with a dict of AnnData each one gets the
predictions for its rows and its modality's embedding in ``obsm["X_balmm"]``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from balmm.data.anndata_input import PerModality
from balmm.errors import InputError
from balmm.outputs import to_json

KEY = "balmm"

__all__ = ["markers", "predict", "profile", "train"]


def _load(data: Any, label_key, split_key, layer, var_key, test_size, seed, require_labels=True):
    from balmm import load

    if not isinstance(data, ad.AnnData | Mapping) and not hasattr(data, "mod"):
        raise InputError(
            f"expected a MuData, an AnnData or a dict of AnnData, not {type(data).__name__}"
        )
    return load(data, label_key=label_key, split_key=split_key, layer=layer, var_key=var_key,
                test_size=test_size, seed=seed, require_labels=require_labels)  # fmt: skip


def _h5_safe(value: Any) -> Any:
    """JSON-like ``value`` as what anndata writes to ``.uns``: nested dicts of numbers,
    strings, bools and arrays; None is left out; a list of dicts becomes a dict keyed 0, 1,
    ...; anything else that is mixed is stored as a JSON string."""
    if isinstance(value, Mapping):
        return {str(k): _h5_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        if all(isinstance(v, Mapping) for v in value) and value:
            return {str(i): _h5_safe(v) for i, v in enumerate(value)}
        if all(isinstance(v, bool | np.bool_) for v in value):
            return np.asarray(value, dtype=bool)
        if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in value):
            return np.asarray(value, dtype=np.float64)
        if all(isinstance(v, str) for v in value):
            return np.asarray(value, dtype=object)
        return json.dumps(json.loads(to_json(value)))
    if isinstance(value, float | int | str | bool | np.number | np.bool_):
        return value
    return str(value)


def _set_uns(target: Any, part: str, summary: dict) -> None:
    store = target.uns.get(KEY)
    store = dict(store) if isinstance(store, Mapping) else {}
    store[part] = _h5_safe(json.loads(to_json(summary)))
    target.uns[KEY] = store


def _targets(data: Any) -> list[tuple[Any, str | None]]:
    """(object, modality) pairs receiving results: the MuData itself (None) and its mods, an
    AnnData alone (None), or each AnnData of a dict (its modality name)."""
    if isinstance(data, ad.AnnData):
        return [(data, None)]
    if isinstance(data, Mapping):
        return [(a, str(m)) for m, a in data.items()]
    return [(data, None), *((a, str(m)) for m, a in data.mod.items())]


def _write_back(data: Any, emb: ad.AnnData, predictions: pd.DataFrame, classes: list[str]) -> None:
    """Embeddings and predictions into ``data``, each row aligned by sample ID."""
    pred = predictions.set_index(predictions["sample"].astype(str))
    emb_names = pd.Index(emb.obs_names.astype(str))
    is_dict = isinstance(data, Mapping)
    for target, mod in _targets(data):
        names = pd.Index(target.obs_names.astype(str))
        rows = emb_names.get_indexer(names)
        has = rows >= 0
        key = "X_fused" if mod is None else f"X_{mod}"
        if key in emb.obsm:
            z = np.full((len(names), emb.obsm[key].shape[1]), np.nan, dtype=np.float32)
            z[has] = emb.obsm[key][rows[has]]
            target.obsm["X_balmm"] = z
        if mod is not None and not is_dict:
            continue  # a MuData's mods get their embedding; predictions go to its global obs
        p = pred.reindex(names)
        target.obs["balmm_prediction"] = pd.Categorical(p["predicted"], categories=classes)
        for c in classes:
            target.obs[f"balmm_proba_{c}"] = p[f"proba_{c}"].to_numpy(dtype=np.float64)
        split = pd.Series(emb.obs["split"].astype(str).to_numpy(), index=emb_names)
        target.obs["balmm_split"] = pd.Categorical(split.reindex(names))


def profile(
    data: Any,
    label_key: str | None = None,
    split_key: str | None = None,
    layer: PerModality = None,
    var_key: PerModality = None,
    *,
    out: str | Path | None = None,
    test_size: float = 0.3,
    seed: int = 0,
    **kwargs: Any,
):
    """Profile modality imbalance (as ``balmm profile``) on the training samples.

    Writes ``uns["balmm"]["profile"]`` (modalities, pairs, kd_plan, shapley, verdict) and
    returns the :class:`balmm.profiling.result.ProfileResult` (``.to_dict()`` is
    profile.json). ``kwargs``: options of :func:`balmm.profiling.run.profile`.
    """
    from balmm.profiling.run import profile as run_profile

    mdata = _load(data, label_key, split_key, layer, var_key, test_size, seed)
    result = run_profile(mdata, out=out, seed=seed, **kwargs)
    full = result.to_dict()
    summary = {k: full[k] for k in ("modalities", "pairs", "kd_plan", "shapley", "verdict")}
    for target, mod in _targets(data):
        if mod is None or isinstance(data, Mapping):
            _set_uns(target, "profile", summary)
    return result


def _train_summary(result) -> dict:
    m = result.metrics
    return {
        "classes": m["classes"],
        "protocol": m["protocol"],
        "test": {"fused": m["test"]["fused"], "modalities": m["test"]["modalities"]},
        "val": {"fused": m["val"]["fused"], "modalities": m["val"]["modalities"]},
        "weights": m["imbalance"]["weights"],
        "excluded_from_fusion": m["imbalance"]["excluded_from_fusion"],
        "plan": result.plan,
        "out": str(result.out) if result.out is not None else None,
    }


def train(
    data: Any,
    label_key: str | None = None,
    split_key: str | None = None,
    layer: PerModality = None,
    var_key: PerModality = None,
    *,
    out: str | Path | None = None,
    test_size: float = 0.3,
    seed: int = 0,
    config: Any = None,
    device: str | None = None,
    **overrides: Any,
):
    """Train a balanced multimodal classifier (as ``balmm train``; same seed, same numbers).

    The split: ``split_key`` (an ``.obs`` column with train/test), else a stratified
    ``test_size`` split with ``seed``. Writes ``obsm["X_balmm"]``, the modalities'
    ``obsm["X_balmm"]``, ``obs["balmm_prediction"]``, ``balmm_proba_<class>``,
    ``balmm_split`` and ``uns["balmm"]["train"]`` (metrics, weights, distillation plan);
    returns the :class:`balmm.training.fit.TrainResult`. ``overrides``: TrainConfig fields
    (``balancer="none"``, ``epochs=10``, ...); ``out``: also write the CLI's output folder.
    """
    from balmm.training.fit import train as fit_train

    mdata = _load(data, label_key, split_key, layer, var_key, test_size, seed)
    result = fit_train(mdata, config=config, out=out, device=device, seed=seed, **overrides)
    classes = list(result.metrics["classes"])
    emb, predictions = _with_unlabelled(result, mdata)
    _write_back(data, emb, predictions, classes)
    summary = _train_summary(result)
    for target, mod in _targets(data):
        if mod is None or isinstance(data, Mapping):
            _set_uns(target, "train", summary)
    return result


def _with_unlabelled(result, mdata) -> tuple[ad.AnnData, pd.DataFrame]:
    """The run's embeddings and predictions plus those of the samples training left out
    (unlabelled training samples; split ``unlabelled``), so that every row of the object
    is embedded (``sc.pp.neighbors`` needs no NaN). They are predicted by the trained
    model as new samples would be: no statistic is refitted."""
    from balmm.predict import predict_result

    emb, predictions = result.embeddings, result.predictions
    rest = mdata.obs.index[~mdata.obs.index.isin(emb.obs_names)]
    if not len(rest):
        return emb, predictions
    with tempfile.TemporaryDirectory(prefix="balmm-model-") as tmp:
        folder = result.out if result.out is not None else _save_model(result, Path(tmp))
        extra = predict_result(folder, mdata.subset(rest))
    more = extra.embeddings
    more.obs["split"] = pd.Categorical(["unlabelled"] * more.n_obs)
    emb = ad.concat([emb, more], merge="first", uns_merge="first")
    preds = extra.predictions.assign(split="unlabelled")
    return emb, pd.concat([predictions, preds.reindex(columns=predictions.columns)],
                          ignore_index=True)  # fmt: skip


def _save_model(result, folder: Path) -> Path:
    """A TrainResult trained without ``out``: its bundle saved as ``balmm train`` does."""
    from balmm.model.bundle import save_bundle

    return save_bundle(
        folder / "model", result.model, result.preprocessor, result.metrics["classes"],
        result.config.to_dict(), label_mapping=getattr(result, "label_mapping", None),
        graph=getattr(result, "graph_state", None),
        extra={"protocol": result.metrics["protocol"]},
    )  # fmt: skip


def predict(
    model: Any,
    data: Any,
    label_key: str | None = None,
    layer: PerModality = None,
    var_key: PerModality = None,
    *,
    out: str | Path | None = None,
    device: str = "auto",
):
    """Apply a trained model (a ``train`` result or a model folder) to new samples.

    Writes the same keys as :func:`train` (``balmm_split`` is ``predict``) and returns the
    :class:`balmm.predict.PredictResult` (predictions, embeddings, metrics); with
    ``label_key`` the predictions are scored. ``out``: also write the CLI's output folder.
    """
    from balmm.predict import predict_result

    mdata = _load(data, label_key, None, layer, var_key, 0.3, 0, require_labels=False)
    with tempfile.TemporaryDirectory(prefix="balmm-model-") as tmp:
        if isinstance(model, str | Path):
            folder = Path(model)
        elif getattr(model, "out", None) is not None:
            folder = Path(model.out)
        elif getattr(model, "model", None) is not None:
            folder = _save_model(model, Path(tmp))
        else:
            raise InputError(
                f"model: expected a train result or a model folder, not {type(model).__name__}"
            )
        result = predict_result(folder, mdata, out=out, device=device)
    _write_back(data, result.embeddings, result.predictions, result.classes)
    return result


def markers(
    result: Any,
    data: Any,
    label_key: str | None = None,
    split_key: str | None = None,
    layer: PerModality = None,
    var_key: PerModality = None,
    *,
    top: int = 20,
    n_folds: int | None = None,
    test_size: float = 0.3,
    seed: int = 0,
) -> pd.DataFrame:
    """Per modality and class, the ``top`` features driving ``result``'s predictions, with
    their stability across ``n_folds`` fold models (None: the run's cross-fitting folds,
    reused; 5 refits when it did not cross-fit) and held-out permutation importance (the
    table of markers.csv; see :mod:`balmm.markers`). ``data`` and the keys as given to
    :func:`train` (only the training split is used). Also stored in ``uns["balmm"]["markers"]``.
    """
    from balmm.markers import markers as find_markers

    mdata = _load(data, label_key, split_key, layer, var_key, test_size, seed)
    table = find_markers(result, mdata, top=top, n_folds=n_folds)
    for target, mod in _targets(data):
        if mod is None or isinstance(data, Mapping):
            _set_uns(target, "markers", {c: table[c].tolist() for c in table.columns})
    return table
