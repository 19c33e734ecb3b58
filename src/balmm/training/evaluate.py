"""Final evaluation (validation and test, once), imbalance analysis and predictions table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

import balmm
from balmm.config import TrainConfig
from balmm.data.pairing import pairing_table
from balmm.model.bundle import versions
from balmm.profiling.shapley import CachedGame, exact_shapley
from balmm.training.balancers import FUSED
from balmm.training.embeddings import EmbeddingSource, LazyEmbeddings
from balmm.training.metrics import classification_metrics, macro_f1
from balmm.training.tensors import infer, single


@dataclass
class TrainResult(LazyEmbeddings):
    metrics: dict
    history: list[dict]
    predictions: pd.DataFrame
    config: TrainConfig
    plan: list[dict] = field(default_factory=list)
    model: Any = None  # MultiModalNet
    preprocessor: Any = None
    # computes embeddings.h5ad's rows on demand (balmm.training.embeddings); ``embeddings``
    # builds the AnnData from it when first asked for
    embedding_source: Any = None
    out: Path | None = None
    label_mapping: dict = field(default_factory=dict)
    graph_state: dict | None = None  # gcn: training graph for inductive prediction
    # stage 1 per modality: encoder/head state trained alone ("state") and after KD
    stage1_states: dict = field(default_factory=dict)
    # cross-fitting: each training sample's fold (index: sample ID) and, per fold, each
    # modality's unimodal encoder/head state trained without that fold (markers reuse them)
    crossfit_folds: pd.Series | None = None
    crossfit_states: list[dict] = field(default_factory=list)
    # one row per sample: which modalities it has, label, split (written as pairing.csv)
    pairing: pd.DataFrame | None = None
    # wall-clock seconds per phase (timing.json; kept out of metrics.json, which is
    # byte-identical across reruns)
    timing: dict[str, float] = field(default_factory=dict)
    # units restored from checkpoints (finished ones, and "unit@epoch" for partial ones)
    resumed_units: list[str] = field(default_factory=list)
    _embeddings: Any = field(default=None, repr=False)


def _masked_copy(s, keep: set[str]):
    """Masks of ``s`` with every modality outside ``keep`` hidden."""
    src = s.gM if s.adj is not None else s.M
    return {m: (mk if m in keep else torch.zeros_like(mk)) for m, mk in src.items()}


@torch.no_grad()
def _fused_f1_with(model, s, keep: set[str], n_classes: int) -> float:
    # in batches: a large split's features may be on disk (--backed), never read whole
    fused = infer(model, s, masks=_masked_copy(s, keep), embeddings=False)[FUSED]
    y = s.y.cpu().numpy()
    lab = y >= 0
    return macro_f1(y[lab], fused.argmax(1)[lab], n_classes)


def shapley_contributions(model, s, n_classes: int) -> dict[str, float]:
    """Exact Shapley values of fused macro-F1 over modality subsets (modalities outside a
    subset are masked as missing); leave-one-out drops when there are more than 8."""
    mods = [m for m in model.modalities if m not in model.fusion_off]
    if model.early_fusion or not mods or int((s.y >= 0).sum()) == 0:
        return {}
    if len(mods) > 8:
        full = _fused_f1_with(model, s, set(mods), n_classes)
        return {m: full - _fused_f1_with(model, s, set(mods) - {m}, n_classes) for m in mods}
    return exact_shapley(
        CachedGame(mods, lambda subset: _fused_f1_with(model, s, set(subset), n_classes))
    )


def _probe_f1(z_fit, y_fit, z_eval, y_eval, n_classes: int, seed: int) -> float:
    """Macro-F1 of a logistic-regression probe fitted on the fit samples' embeddings."""
    if len(np.unique(y_fit)) < 2 or len(y_eval) == 0:
        return float("nan")
    probe = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(z_fit, y_fit)
    return macro_f1(y_eval, probe.predict(z_eval), n_classes)


def under_optimisation(model, sets, proba, stage1, n_classes: int, seed: int) -> dict[str, dict]:
    """Probe on the encoder trained alone (stage 1, before distillation) minus probe on the
    jointly trained encoder, on validation and test: > 0 means joint training left the
    modality's encoder under-optimised. ``proba``: :func:`infer` of ``model`` per split."""
    out: dict[str, dict] = {}
    if model.early_fusion:
        return out
    for m in model.modalities:
        if m not in stage1:
            continue
        rec: dict[str, float] = {}
        emb = {}
        for name in ("fit", "val", "test"):
            s = sets[name]
            mk = s.M[m].cpu().numpy() & (s.y.cpu().numpy() >= 0)
            emb[name] = (
                infer(stage1[m]["net"], single(s, m))[f"z:{m}"][mk],
                proba[name][f"z:{m}"][mk],
                s.y.cpu().numpy()[mk],
            )
        za_fit, zj_fit, y_fit = emb["fit"]
        for name in ("val", "test"):
            za, zj, y = emb[name]
            a = _probe_f1(za_fit, y_fit, za, y, n_classes, seed)
            j = _probe_f1(zj_fit, y_fit, zj, y, n_classes, seed)
            rec[f"alone_{name}"] = a
            rec[f"joint_{name}"] = j
            rec[f"gap_{name}"] = a - j
        out[m] = rec
    return out


def split_metrics(proba: dict[str, np.ndarray], s, classes: list[str], model) -> dict:
    """Metrics of the fused head, and of each modality head over the samples that have it."""
    y = s.y.cpu().numpy()
    res: dict[str, Any] = {"fused": classification_metrics(y, proba[FUSED], classes)}
    mods = {}
    for m in model.heads:
        mk = s.M[m].cpu().numpy()
        mods[m] = classification_metrics(y[mk], proba[m][mk], classes)
    res["modalities"] = mods
    return res


def predictions_table(
    proba: dict[str, np.ndarray], s, classes: list[str], model, split: str | None = None
) -> pd.DataFrame:
    """One row per sample of ``s``: sample, [split,] true and predicted label, the fused
    class probabilities, the modalities the fused head used, each modality head's
    prediction (None where the sample lacks the modality)."""
    p = proba[FUSED]
    y = s.y.cpu().numpy()
    pres = {m: s.M[m].cpu().numpy() for m in s.M}
    names = np.array(classes, dtype=object)
    # modalities_used: one string per combination of present modalities, shared by its rows
    on = [m for m in s.M if m not in model.fusion_off]
    used = np.full(len(s), "", dtype=object)
    if on and len(s):
        combos, code = np.unique(np.stack([pres[m] for m in on], 1), axis=0, return_inverse=True)
        names_of = [";".join(m for m, h in zip(on, c, strict=True) if h) for c in combos]
        used = np.array(names_of, dtype=object)[code.reshape(-1)]
    cols: dict[str, Any] = {"sample": s.ids.astype(str)}
    if split is not None:
        cols["split"] = split
    cols["true"] = np.where(y >= 0, names[np.maximum(y, 0)], None)
    cols["predicted"] = names[p.argmax(1)]
    df = pd.DataFrame(cols)
    for j, c in enumerate(classes):
        df[f"proba_{c}"] = p[:, j]
    df["modalities_used"] = used
    for m in model.heads:
        df[f"predicted_{m}"] = np.where(pres[m], names[proba[m].argmax(1)], None)
    return df


def evaluate(
    *, model, sets, classes, cfg, stage1, plan, label_mi, label_mi_ci, graph_info, balancer,
    final_weights, selected_epoch, data, preprocessor, history, device, oof_val=None,
) -> TrainResult:  # fmt: skip
    """Metrics, predictions and embeddings of the final model. ``oof_val`` (``refit_on =
    "train"``: no carve; the fit samples are every training sample): each head's
    out-of-fold log-probabilities of the cross-fitting folds' joint models over the fit
    samples, which then give metrics.json's ``val``."""
    n_classes = len(classes)
    proba = {name: infer(model, sets[name]) for name in ("fit", "val", "test")}
    if oof_val is None:
        val_metrics = split_metrics(proba["val"], sets["val"], classes, model)
    else:
        oof = {h: np.exp(v) for h, v in oof_val.items()}
        val_metrics = split_metrics(oof, sets["fit"], classes, model)
    metrics: dict[str, Any] = {
        "balmm_version": balmm.__version__,
        "protocol": {
            "balancer": cfg.balancer,
            "encoder": cfg.encoder,
            "graph": (
                ("transductive" if cfg.transductive else "inductive")
                if cfg.encoder == "gcn"
                else None
            ),
            "n_fit": len(sets["fit"]),
            "n_val": len(sets["val"]),
            "n_test": len(sets["test"]),
            "n_test_labelled": int((sets["test"].y >= 0).sum()),
            "split_source": data.split_source,
            "validation": f"stratified {cfg.val_size:.0%} of the training split (seed {cfg.seed})",
            "model_selection": "best validation fused macro-F1 (ties: lower validation loss)",
            "selected_epoch": selected_epoch,
            "test_use": "evaluated once, after model selection; never used for selection",
            "preprocessing_fitted_on": "fit samples (training split minus validation)",
            "device": str(device),
            "seed": cfg.seed,
        },
        "classes": classes,
        "val": val_metrics,
        "test": split_metrics(proba["test"], sets["test"], classes, model),
        "label_mi_bits": {
            m: {"estimate": v[0], "ci": list(label_mi_ci.get(m, (v[1],)))}
            for m, v in label_mi.items()
        },
        "stage1": {
            m: {
                "val_macro_f1": st["val_f1"],
                "val_macro_f1_after_kd": st.get("kd_val_f1"),
                "distilled": "kd_state" in st,
            }
            for m, st in stage1.items()
        },
        "kd_plan": plan,
        "imbalance": {
            "contributions": {
                "method": "Shapley value of fused macro-F1 over modality subsets (masking)",
                "val": shapley_contributions(model, sets["val"], n_classes),
                "test": shapley_contributions(model, sets["test"], n_classes),
            },
            "under_optimisation_gap": under_optimisation(
                model, sets, proba, stage1, n_classes, cfg.seed
            ),
            "weights": final_weights,
            "excluded_from_fusion": dict(balancer.excluded),
            "notes": list(balancer.notes),
        },
        "graph": dict(graph_info),
        "versions": versions(),
    }
    if oof_val is not None:
        metrics["protocol"].update(
            validation="out-of-fold: each training sample scored by the joint model of the "
            "cross-fitting fold that did not train on it; no validation carve",
            model_selection="epoch counts and stage-2 weights from the cross-fitting folds' "
            "pooled out-of-fold curves (no validation carve)",
            preprocessing_fitted_on="every training sample (no validation carve)",
        )
    predictions = pd.concat(
        [
            predictions_table(proba[name], sets[name], classes, model, split=split_label)
            for name, split_label in (("fit", "train"), ("val", "val"), ("test", "test"))
        ],
        ignore_index=True,
    )
    graph_mode = metrics["protocol"]["graph"]
    if graph_mode:  # gcn: every output names the graph mode (transductive must be visible)
        predictions["graph"] = graph_mode
        for h in history:
            h["graph"] = graph_mode
    for p in proba.values():  # the embeddings are recomputed a block at a time when written
        for k in [k for k in p if k.startswith("z:")]:
            del p[k]
    emb = EmbeddingSource(model, sets, ("fit", "val", "test"), classes,
                          {n: proba[n][FUSED] for n in ("fit", "val", "test")})  # fmt: skip
    emb.uns["balmm"] = {
        k: v
        for k, v in metrics["protocol"].items()
        if k in ("balancer", "encoder", "graph", "seed", "split_source") and v is not None
    }
    return TrainResult(
        metrics=metrics,
        history=history,
        predictions=predictions,
        config=cfg,
        plan=plan,
        model=model,
        preprocessor=preprocessor,
        embedding_source=emb,
        pairing=pairing_table(data),
    )
