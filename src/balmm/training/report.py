"""Write the outputs of ``balmm train --out DIR`` (see docs/outputs.md)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from balmm import pl
from balmm.data.pairing import input_order
from balmm.outputs import (
    OutputRun,
    output_dir,
    output_path,
    to_json,
    write_json_atomic,
    write_text_atomic,
)
from balmm.pl._common import class_names
from balmm.report.html import figures, html_page, img_tag, plan_reasons, render, table_html
from balmm.training.embeddings import write_h5ad

# readable column headers for metric keys; unknown keys are shown with spaces for "_"
HEADERS = {
    "n": "n",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro-F1",
    "weighted_f1": "weighted F1",
    "auroc": "AUROC",
    "ece": "calibration error (ECE)",
    "log_loss": "log-loss",
}


def header(key: str) -> str:
    """A readable column header for a metrics key (``macro_f1`` -> ``macro-F1``)."""
    return HEADERS.get(key, key.replace("_", " "))


def write_outputs(result, out: Path | OutputRun, data=None) -> Path:
    """Everything into the run's work folder, put in place of ``out`` only when complete.
    With the training ``data``, markers.csv too (linear and mlp encoders)."""
    with output_dir(out, "train") as tmp:
        write_outputs_into(result, tmp, data)
    return output_path(out)


def write_outputs_into(result, tmp: Path, data=None) -> Path:
    """Every output file into the folder ``tmp`` (an output run's work folder)."""
    from balmm.model.bundle import save_bundle

    predictions, embeddings = result.predictions, result.embedding_source
    if result.pairing is not None:  # every file in input order (pairing.csv lists it)
        predictions = predictions.iloc[input_order(result.pairing.index, predictions["sample"])]
        embeddings = embeddings.reordered(input_order(result.pairing.index, embeddings.ids()))
    write_json_atomic(tmp / "timing.json", getattr(result, "timing", {}))
    write_json_atomic(tmp / "metrics.json", result.metrics)
    predictions.to_csv(tmp / "predictions.csv", index=False)
    if result.pairing is not None:
        result.pairing.to_csv(tmp / "pairing.csv", index_label="sample")
    write_text_atomic(tmp / "history.jsonl", "".join(to_json(h) + "\n" for h in result.history))
    graph = getattr(result, "graph_state", None)
    save_bundle(
        tmp / "model",
        result.model,
        result.preprocessor,
        result.metrics["classes"],
        result.config.to_dict(),
        label_mapping=getattr(result, "label_mapping", None),
        graph=graph,
        extra={"protocol": result.metrics["protocol"]},
    )
    # a block of rows at a time: at 10^6 samples the embeddings alone are several GB
    write_h5ad(embeddings, tmp / "embeddings.h5ad")
    table = _markers(result, data)
    if table is not None:
        table.to_csv(tmp / "markers.csv", index=False, float_format="%.6g")
    pngs = _plots(result, tmp / "plots")
    timing = getattr(result, "timing", None) or _timing(tmp)
    write_text_atomic(tmp / "report.html", render_html(result, pngs, timing, table))
    return tmp


def _markers(result, data) -> pd.DataFrame | None:
    """markers.csv's table, or None where markers do not apply (no data, gcn or concat)."""
    if data is None or result.model is None:
        return None
    if result.model.early_fusion or result.model.encoder_kind not in ("linear", "mlp"):
        return None
    from balmm.markers import markers

    table = markers(result, data)
    return table if len(table) else None


def _timing(folder: Path) -> dict:
    """timing.json when the run wrote one (wall-clock times are kept out of metrics.json)."""
    p = folder / "timing.json"
    return json.loads(p.read_text("utf-8")) if p.is_file() else {}


# ----------------------------------------------------------------------------- plots
UMAP_MIN_SAMPLES = 2000
# the embedding plot shows at most this many samples (a stratified subsample above it): a
# UMAP of 20,000 took 45 s on 2 busy cores (neighbours and layout grow faster than n)
REPORT_MAX_POINTS = 5000


def embedding_basis(setting: str, n_samples: int) -> str:
    """The report's embedding plot of ``n_samples`` points: ``auto`` is UMAP from
    :data:`UMAP_MIN_SAMPLES` and PCA below, where UMAP's one-off numba compilation
    outweighs training the model."""
    if setting != "auto":
        return setting
    return "umap" if n_samples >= UMAP_MIN_SAMPLES else "pca"


def _plots(result, folder: Path) -> dict[str, bytes]:
    """Every report figure, drawn by the balmm.pl functions, as name -> PNG bytes."""
    m = result.metrics
    pngs: dict[str, bytes] = {}
    has = {h.get("stage") for h in result.history if "weights" in h}
    if any("val_f1" in h for h in result.history):
        pngs["val_f1"] = render(pl.validation_f1, folder / "val_f1.png", result)
    if has:
        pngs["weights"] = render(pl.loss_weights, folder / "weights.png", result)
    for split in ("val", "test"):
        if m.get(split, {}).get("fused", {}).get("confusion_matrix"):
            pngs[f"confusion_{split}"] = render(
                pl.confusion_matrix, folder / f"confusion_{split}.png", result, split=split
            )
    test = result.predictions
    if "split" in test:
        test = test[test["split"] == "test"]
    if test["true"].nunique() >= 2:
        pngs["roc_test"] = render(pl.roc, folder / "roc_test.png", result, split="test")
    if m.get("imbalance", {}).get("contributions", {}).get("test"):
        pngs["contributions"] = render(pl.contributions, folder / "contributions.png", result)
    if m.get("imbalance", {}).get("under_optimisation_gap"):
        pngs["imbalance"] = render(pl.imbalance, folder / "imbalance.png", result)
    if m.get("kd_plan"):
        pngs["kd_plan"] = render(pl.kd_plan, folder / "kd_plan.png", result)
    seed = int(m.get("protocol", {}).get("seed") or 0)
    emb = plotted_embeddings(result, seed)
    if emb is not None and "X_fused" in emb.obsm and emb.n_obs >= 4:
        basis = embedding_basis(getattr(result.config, "report_embedding", "auto"), emb.n_obs)
        shown = SimpleNamespace(embeddings=emb, label_mapping=result.label_mapping)
        pngs["embedding"] = render(
            pl.embedding, folder / "embedding.png", shown, basis=basis, seed=seed
        )
    return pngs


def plotted_embeddings(result, seed: int) -> Any:
    """The samples the report's embedding plot shows: all of them up to
    :data:`REPORT_MAX_POINTS`, above that a stratified subsample (by split and class,
    seeded) of that many, so the plot's cost (UMAP, PCA, drawing) does not grow with n."""
    src = result.embedding_source
    if src is None or src.n_obs <= REPORT_MAX_POINTS:
        return result.embeddings
    from balmm.data.splits import stratified_subsample

    obs = src.obs()
    strata = obs["split"].astype(str) + "/" + obs["label"].astype(str)
    return src.anndata(stratified_subsample(src.n_obs, strata.to_numpy(), REPORT_MAX_POINTS,
                                            seed))  # fmt: skip


# ----------------------------------------------------------------------------- tables
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_table(metrics: dict) -> pd.DataFrame:
    """One row per (split, head) with every scalar metric recorded for it."""
    rows = []
    for split in ("val", "test"):
        sm = metrics.get(split) or {}
        heads = {"fused": sm.get("fused") or {}, **(sm.get("modalities") or {})}
        for head, v in heads.items():
            if not v or v.get("n", 0) == 0:
                continue
            row = {"split": split, "head": head}
            row.update({header(k): x for k, x in v.items() if _is_number(x)})
            rows.append(row)
    return pd.DataFrame(rows).set_index(["split", "head"]) if rows else pd.DataFrame()


def per_class_table(result) -> pd.DataFrame:
    """Per-class F1 of every head on the test split, classes by name."""
    m = result.metrics
    classes = m["classes"]
    names = dict(zip(classes, class_names(result, classes), strict=True))
    sm = m.get("test") or {}
    heads = {"fused": sm.get("fused") or {}, **(sm.get("modalities") or {})}
    rows = {h: v["per_class_f1"] for h, v in heads.items() if v.get("per_class_f1")}
    df = pd.DataFrame(rows).T
    if df.empty:
        return df
    df = df.reindex(columns=classes).rename(columns=names)
    df.index.name = "head (test)"
    return df


def modality_table(m: dict) -> pd.DataFrame:
    """What each modality knows and what it contributed, from whatever the run recorded."""
    imb = m.get("imbalance") or {}
    gaps = imb.get("under_optimisation_gap") or {}
    contrib = (imb.get("contributions") or {}).get("test") or {}
    mods = list(m.get("label_mi_bits") or m.get("stage1") or gaps)
    rows = {}
    for mod in mods:
        mi = (m.get("label_mi_bits") or {}).get(mod) or {}
        st1 = (m.get("stage1") or {}).get(mod) or {}
        gap = gaps.get(mod) or {}
        row = {
            "label MI (bits)": mi.get("estimate"),
            "stage-1 val F1": st1.get("val_macro_f1"),
            "after distillation": st1.get("val_macro_f1_after_kd"),
            "final loss weight": (imb.get("weights") or {}).get(mod),
            "contribution (test)": contrib.get(mod),
            "probe alone (test)": gap.get("alone_test"),
            "probe joint (test)": gap.get("joint_test"),
            "under-optimisation gap (test)": gap.get("gap_test"),
            "head macro-F1 (test)": ((m.get("test") or {}).get("modalities") or {})
            .get(mod, {})
            .get("macro_f1"),
        }
        rows[mod] = {k: (v if _is_number(v) else math.nan) for k, v in row.items()}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df = df.loc[:, df.notna().any()] if len(df) else df  # columns this run did not record
    df.index.name = "modality"
    return df


def plan_table(plan: list[dict]) -> pd.DataFrame:
    """The distillation plan with every field the run recorded (reasons aside), readable
    headers."""
    df = pd.DataFrame(plan).drop(columns=["reason"], errors="ignore")
    for c in df.columns:
        if df[c].dtype == bool:
            df[c] = df[c].map({True: "yes", False: "no"})
    names = {
        "gap_bits": "CCH gap (bits)",
        "gap_lo_bits": "gap, lower bound (bits)",
        "I_teacher_student_bits": "I(teacher;student) bits",
        "I_student_label_bits": "I(student;Y) bits",
    }
    return df.rename(columns=lambda c: names.get(c, header(c)))


# ----------------------------------------------------------------------------- html
def _subtitle(result) -> str:
    m = result.metrics
    p = m.get("protocol") or {}
    graph = f", graph: {p['graph'].upper()}" if p.get("graph") else ""
    classes = ", ".join(class_names(result, m["classes"]))
    return (
        f"balancer {p.get('balancer')}, encoder {p.get('encoder')}{graph}; fit {p.get('n_fit')}"
        f" / val {p.get('n_val')} / test {p.get('n_test')} samples; classes: {classes}; split: "
        f"{p.get('split_source')}. Model selected at epoch {p.get('selected_epoch')} on "
        "validation fused macro-F1; the test split was evaluated once, after selection."
    )


def _imgs(pngs: dict[str, bytes], *names: str) -> str:
    return figures(*(img_tag(pngs[k], k.replace("_", " ")) for k in names if k in pngs))


def markers_html(table: pd.DataFrame, per_class: int = 5) -> str:
    """The top ``per_class`` markers of each modality and class, one table per modality."""
    parts = [
        "<p class='note'>score: the feature's effect on the class's centred logit per sd "
        "(positive: higher values push towards the class); stability: fraction of "
        "cross-validation refits with the feature among their top markers; permutation "
        "importance: rise in held-out log-loss when it is shuffled. All on the training "
        "split (markers.csv has the full list; docs/outputs.md).</p>"
    ]
    for mod, sub in table.groupby("modality", sort=False):
        top = sub[sub["rank"] <= per_class]
        parts.append(f"<h3>{html.escape(str(mod))}</h3>")
        cols = ["class", "rank", "feature", "score", "stability", "permutation_importance"]
        show = top[cols].rename(columns={"permutation_importance": "permutation importance"})
        parts.append(table_html(show))
    return "".join(parts)


def render_html(
    result, pngs: dict[str, bytes], timing: dict | None = None, markers: pd.DataFrame | None = None
) -> str:
    """report.html: metrics, curves, per-modality analysis, plan, confusion, ROC and UMAP."""
    m = result.metrics
    sections = [("Metrics", table_html(metric_table(m)))]
    pcf = per_class_table(result)
    if not pcf.empty:
        sections.append(("Per-class F1 (test)", table_html(pcf)))
    if "roc_test" in pngs or "confusion_test" in pngs:
        sections.append(("Test predictions", _imgs(pngs, "roc_test", "confusion_test")))
    if "val_f1" in pngs or "weights" in pngs:
        sections.append(("Training curves", _imgs(pngs, "val_f1", "weights")))
    sections.append(("Per modality", table_html(modality_table(m))))
    if "contributions" in pngs or "imbalance" in pngs:
        note = (
            "<p class='note'>Left: each assay's Shapley contribution to the fused test "
            "macro-F1. Right: probe macro-F1 of each encoder trained alone (stage 1) and in "
            "the joint model; the difference is the under-optimisation gap.</p>"
        )
        imgs = _imgs(pngs, "contributions", "imbalance")
        sections.append(("Contributions and imbalance", note + imgs))
    excl = (m.get("imbalance") or {}).get("excluded_from_fusion") or {}
    if excl:
        items = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in excl.items()
        )
        sections.append(("Left out of the fusion", f"<ul>{items}</ul>"))
    plan = m.get("kd_plan") or []
    if plan:
        inner = table_html(plan_table(plan)) + plan_reasons(plan)
        sections.append(("Distillation plan (stage 1)", inner + _imgs(pngs, "kd_plan")))
    else:
        none = "no plan (single modality, distillation disabled, or no stage 1)"
        sections.append(("Distillation plan (stage 1)", f"<p class='note'>{none}</p>"))
    if markers is not None and len(markers):
        sections.append(("Markers", markers_html(markers)))
    if "embedding" in pngs:
        n = result.embedding_source.n_obs if result.embedding_source is not None else 0
        n_shown = min(n, REPORT_MAX_POINTS) if n else result.embeddings.n_obs
        basis = embedding_basis(getattr(result.config, "report_embedding", "auto"), n_shown)
        how = "UMAP (scanpy)" if basis == "umap" else "The first two principal components"
        which = "every sample"
        if n > n_shown:
            which = f"a stratified subsample of {n_shown:,} of the {n:,} samples"
        sections.append(
            (
                "Fused embedding",
                f"<p class='note'>{how} of the fused embedding of {which} "
                "(training, validation and test), coloured by the true class.</p>"
                + _imgs(pngs, "embedding"),
            )
        )
    if "confusion_val" in pngs:
        sections.append(("Validation confusion matrix", _imgs(pngs, "confusion_val")))
    if timing:
        flat = {k: v for k, v in timing.items() if _is_number(v)}
        if flat:
            df = pd.DataFrame({"seconds": flat})
            df.index.name = "step"
            sections.append(("Wall-clock time", table_html(df, "{:.1f}")))
    return html_page("balmm train", sections, subtitle=_subtitle(result))
