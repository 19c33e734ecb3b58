"""``balmm predict``: apply a saved model bundle to new samples.

The bundle's fitted preprocessing is applied as it is (no statistic is
re-estimated on the new samples). Features the model needs but the data lack
are filled with the training median (a warning gives the fraction); extra
features are ignored; a sample missing a modality is predicted from the heads
of the modalities it has (the fused head with that modality masked, as in
training), and ``modalities_used`` says which. Labels are optional: when
present, metrics are computed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from balmm.data.dataset import MultiOmicsData
from balmm.errors import InputError
from balmm.outputs import OutputRun, output_dir, output_path, write_json_atomic
from balmm.progress import NULL_PROGRESS, Progress
from balmm.training.embeddings import LazyEmbeddings

logger = logging.getLogger("balmm")


def feature_coverage(bundle, data: MultiOmicsData) -> dict[str, dict]:
    """Per model modality: how many of the model's features the data lack / add."""
    out = {}
    for m, feats in bundle.preprocessor.features.items():
        ad_m = data.mods.get(m)
        if ad_m is None:
            out[m] = {"present": False, "missing_features": len(feats), "missing_fraction": 1.0,
                      "extra_features_ignored": 0}  # fmt: skip
            continue
        have = pd.Index(ad_m.var_names)
        need = pd.Index(feats)
        missing = int((~need.isin(have)).sum())
        out[m] = {
            "present": True,
            "n_samples": int(ad_m.n_obs),
            "missing_features": missing,
            "missing_fraction": missing / max(len(feats), 1),
            "extra_features_ignored": int((~have.isin(need)).sum()),
        }
    return out


@dataclass
class PredictResult(LazyEmbeddings):
    """Predictions (one row per sample, in input order), the embeddings of the same samples
    (AnnData: class probabilities in X, ``obsm['X_fused']`` and ``obsm['X_<modality>']``)
    and the metrics (with scores when labels were given)."""

    predictions: pd.DataFrame
    embedding_source: Any  # balmm.training.embeddings.EmbeddingSource, or None
    metrics: dict
    classes: list[str]
    out: Path | None = None
    _embeddings: Any = None


def predict(
    model_dir: str | Path,
    data: MultiOmicsData,
    out: str | Path | OutputRun | None = None,
    device: str = "auto",
    progress: Progress = NULL_PROGRESS,
    release_raw: bool = False,
) -> pd.DataFrame:
    """Predictions for every sample of ``data`` (one row each; see docs/outputs.md)."""
    return predict_result(model_dir, data, out, device, progress, release_raw).predictions


def predict_result(
    model_dir: str | Path,
    data: MultiOmicsData,
    out: str | Path | OutputRun | None = None,
    device: str = "auto",
    progress: Progress = NULL_PROGRESS,
    release_raw: bool = False,
) -> PredictResult:
    """:func:`predict` with the embeddings and metrics too; with ``out``, writes
    predictions.csv, metrics.json and embeddings.h5ad. ``release_raw``: free the in-memory
    raw values of ``data`` once preprocessed (``data`` is changed; for callers done with
    it, as the CLI)."""

    from balmm.model.bundle import load_bundle
    from balmm.training.fit import feature_store, resolve_device

    dev = resolve_device(device)
    bundle = load_bundle(model_dir, dev)
    model, classes = bundle.model, bundle.classes
    progress.start("predict", "predict", total=1)
    unknown = [m for m in data.mods if m not in model.modalities]
    for m in unknown:
        logger.warning("modality %r is not in the model (model has: %s): ignored", m,
                       ", ".join(model.modalities))  # fmt: skip
    if not any(m in data.mods for m in model.modalities):
        raise InputError(
            f"none of the model's modalities ({', '.join(model.modalities)}) is in the input"
        )
    coverage = feature_coverage(bundle, data)
    for m, c in coverage.items():
        if c["present"] and c["missing_features"]:
            logger.warning(
                "modality %r: %d of %d model features missing (%.1f%%), filled with the training "
                "median", m, c["missing_features"], len(bundle.preprocessor.features[m]),
                100 * c["missing_fraction"],
            )  # fmt: skip
        elif not c["present"]:
            logger.warning("modality %r absent from the input: predicting from the others", m)
    if "label" in data.obs:
        # classes unseen in training cannot be scored; they count as unknown labels
        seen = data.obs["label"].dropna().astype(str)
        new = sorted(set(seen) - set(classes))
        if new:
            logger.warning("labels %s were not in training (classes: %s): not scored",
                           new, classes)  # fmt: skip
    ids = data.obs.index
    sub = MultiOmicsData(mods={m: a for m, a in data.mods.items() if m in model.modalities},
                         obs=data.obs)  # fmt: skip
    with feature_store(sub) as store:
        # with release_raw, each modality's raw values are freed once preprocessed
        keep = ids[:0] if release_raw else None
        proc = bundle.preprocessor.transform(sub, ids, store=store, release_keep=keep)
        res = _apply(model, proc, ids, bundle, dev)
        # while the features on disk (--backed) exist: the embeddings are computed from
        # them a block at a time as they are written, or now when nothing is written
        result = _finish(res, model, model_dir, coverage, unknown, classes, out, progress)
        if store is not None:
            result.drop_source(written=out is not None)
    return result


def _apply(model, proc, ids, bundle, dev):
    """Class probabilities and embeddings of the preprocessed ``proc``."""
    from balmm.training.fit import infer, split_from

    s = split_from(proc, np.arange(len(ids)), dev)
    if model.encoder_kind == "gcn":
        from balmm.model.graph import adjacency_for_new, to_torch

        cfg = bundle.config
        adj, X_ref, M_ref = adjacency_for_new(bundle.graph, proc.X, proc.mask, cfg["knn_k"],
                                              cfg["snf_mu"], cfg["snf_iterations"])  # fmt: skip
        n_ref = len(next(iter(X_ref.values())))
        s.adj = to_torch(adj, dev)
        s.gX = {m: torch.as_tensor(np.concatenate([X_ref[m], proc.X[m]]), device=dev)
                for m in model.modalities}  # fmt: skip
        s.gM = {m: torch.as_tensor(np.concatenate([M_ref[m], proc.mask[m]]), device=dev)
                for m in model.modalities}  # fmt: skip
        s.graph_rows = torch.arange(n_ref, n_ref + len(ids), device=dev)
    return proc, s, infer(model, s, embeddings=False)


def _finish(res, model, model_dir, coverage, unknown, classes, out, progress) -> PredictResult:
    """Predictions table, embeddings and metrics; written into ``out`` when given."""
    from balmm.training.embeddings import EmbeddingSource, write_h5ad
    from balmm.training.evaluate import predictions_table, split_metrics

    proc, s, proba = res
    ids = s.ids
    df = predictions_table(proba, s, classes, model)
    missing_any = {m: int((~proc.mask[m]).sum()) for m in model.modalities}
    for m, n in missing_any.items():
        if 0 < n < len(ids):
            logger.info("%d samples lack %s: predicted from their other modalities", n, m)
    emb = EmbeddingSource(model, {"predict": s}, ("predict",), classes, {"predict": proba["fused"]})
    progress.finish("predict")
    metrics: dict = {
        "model": str(model_dir),
        "n_samples": len(ids),
        "feature_coverage": coverage,
        "samples_missing_modality": missing_any,
        "modalities_ignored": unknown,
    }
    if model.stack is not None and model.stack.source is not None:
        from balmm.training.stack_patterns import pattern_report

        # stack_missing = "pattern": each pattern's stacker, or why it fell back
        metrics["stack_patterns"] = pattern_report(model.stack)
    if (proc.y >= 0).any():
        metrics.update(split_metrics(proba, s, classes, model))
    written = None
    if out is not None:
        with output_dir(out, "predict") as tmp:
            df.to_csv(tmp / "predictions.csv", index=False)
            write_json_atomic(tmp / "metrics.json", metrics)
            write_h5ad(emb, tmp / "embeddings.h5ad")  # a block of rows at a time
        written = output_path(out)
    return PredictResult(predictions=df, embedding_source=emb, metrics=metrics,
                         classes=list(classes), out=written)  # fmt: skip
