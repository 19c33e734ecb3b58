"""Write the outputs of ``balmm train --out DIR`` (see docs/outputs.md)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from balmm.data.pairing import input_order
from balmm.outputs import (
    OutputRun,
    output_dir,
    output_path,
    to_json,
    write_json_atomic,
    write_text_atomic,
)
from balmm.report.html import html_page, img_tag, save_figure, table_html


def write_outputs(result, out: Path | OutputRun) -> Path:
    """Everything into the run's work folder, put in place of ``out`` only when complete."""
    from balmm.model.bundle import save_bundle

    predictions, embeddings = result.predictions, result.embeddings
    if result.pairing is not None:  # every file in input order (pairing.csv lists it)
        predictions = predictions.iloc[input_order(result.pairing.index, predictions["sample"])]
        embeddings = embeddings[input_order(result.pairing.index, embeddings.obs_names)].copy()
    with output_dir(out, "train") as tmp:
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
        import anndata as ad

        # pandas >= 3 makes string indexes nullable-string typed; anndata writes them only
        # when allowed (readable by anndata >= 0.11)
        with ad.settings.override(allow_write_nullable_strings=True):
            embeddings.write_h5ad(tmp / "embeddings.h5ad")
        pngs = _plots(result, tmp / "plots")
        write_text_atomic(tmp / "report.html", _html(result, pngs))
    return output_path(out)


# ----------------------------------------------------------------------------- plots
def _plots(result, folder: Path) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    pngs: dict[str, bytes] = {}
    h2 = [h for h in result.history if h["stage"] == "stage2" and "val_f1" in h]
    if h2:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        heads = list(h2[0]["val_f1"])
        for k in heads:
            ax.plot([h["epoch"] for h in h2], [h["val_f1"].get(k) for h in h2], label=k,
                    lw=2.2 if k == "fused" else 1.3)  # fmt: skip
        sel = result.metrics["protocol"]["selected_epoch"]
        if sel:
            ax.axvline(sel, color="grey", ls="--", lw=1, label="selected")
        ax.set_xlabel("epoch (stage 2)")
        ax.set_ylabel("validation macro-F1")
        ax.legend(fontsize=8)
        pngs["val_f1"] = save_figure(fig, folder / "val_f1.png")
    hw = [h for h in result.history if h["stage"] == "stage2" and "weights" in h]
    if hw:
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        for k in hw[0]["weights"]:
            ax.plot([h["epoch"] for h in hw], [h["weights"][k] for h in hw], label=k)
        ax.set_xlabel("epoch (stage 2)")
        ax.set_ylabel("loss weight")
        ax.legend(fontsize=8)
        pngs["weights"] = save_figure(fig, folder / "weights.png")
    classes = result.metrics["classes"]
    for split in ("val", "test"):
        cm = result.metrics[split]["fused"].get("confusion_matrix")
        if not cm:
            continue
        fig, ax = plt.subplots(figsize=(3.2 + 0.4 * len(classes), 2.8 + 0.4 * len(classes)))
        arr = np.array(cm)
        ax.imshow(arr, cmap="Blues")
        for i in range(arr.shape[0]):
            for j in range(arr.shape[1]):
                ax.text(j, i, str(arr[i, j]), ha="center", va="center",
                        color="white" if arr[i, j] > arr.max() / 2 else "black")  # fmt: skip
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{split} (fused)")
        pngs[f"confusion_{split}"] = save_figure(fig, folder / f"confusion_{split}.png")
    gap = result.metrics["imbalance"]["under_optimisation_gap"]
    if gap:
        mods = list(gap)
        fig, ax = plt.subplots(figsize=(6, 3.2))
        x = np.arange(len(mods))
        ax.bar(x - 0.2, [gap[m]["alone_test"] for m in mods], 0.4, label="encoder trained alone")
        ax.bar(x + 0.2, [gap[m]["joint_test"] for m in mods], 0.4, label="jointly trained")
        ax.set_xticks(x, mods)
        ax.set_ylabel("probe macro-F1 (test)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        pngs["imbalance"] = save_figure(fig, folder / "imbalance.png")
    return pngs


# ----------------------------------------------------------------------------- html
def _metric_table(metrics: dict) -> pd.DataFrame:
    rows = {}
    for split in ("val", "test"):
        sm = metrics[split]
        heads = {"fused": sm["fused"], **sm["modalities"]}
        for head, v in heads.items():
            if v.get("n", 0) == 0:
                continue
            rows[(split, head)] = {
                k: v.get(k)
                for k in (
                    "n",
                    "accuracy",
                    "balanced_accuracy",
                    "macro_f1",
                    "weighted_f1",
                    "auroc",
                    "ece",
                )  # fmt: skip
            }
    df = pd.DataFrame.from_dict(rows, orient="index")
    if len(df):
        df.index = [f"{a} · {b}" for a, b in df.index]
    return df


def _html(result, pngs: dict[str, bytes]) -> str:
    m = result.metrics
    p = m["protocol"]
    graph = f", graph: {p['graph'].upper()}" if p.get("graph") else ""
    sub = (
        f"balancer {p['balancer']}, encoder {p['encoder']}{graph}; fit {p['n_fit']} / val "
        f"{p['n_val']} / test {p['n_test']} samples; split: {p['split_source']}. "
        f"Model selected at epoch {p['selected_epoch']} on validation fused macro-F1; "
        "the test split was evaluated once, after selection."
    )
    sections = [("Metrics", table_html(_metric_table(m)))]
    curves = "".join(img_tag(pngs[k], k) for k in ("val_f1", "weights") if k in pngs)
    if curves:
        sections.append(("Training curves (stage 2)", curves))
    per_mod = {}
    for mod, v in m["label_mi_bits"].items():
        gap = m["imbalance"]["under_optimisation_gap"].get(mod, {})
        per_mod[mod] = {
            "label MI (bits)": v["estimate"],
            "stage-1 val F1": m["stage1"].get(mod, {}).get("val_macro_f1"),
            "after KD": m["stage1"].get(mod, {}).get("val_macro_f1_after_kd"),
            "final weight": m["imbalance"]["weights"].get(mod),
            "Shapley (test)": m["imbalance"]["contributions"].get("test", {}).get(mod),
            "probe alone (test)": gap.get("alone_test"),
            "probe joint (test)": gap.get("joint_test"),
            "under-opt. gap (test)": gap.get("gap_test"),
            "test head F1": m["test"]["modalities"].get(mod, {}).get("macro_f1"),
        }
    per_df = pd.DataFrame.from_dict(per_mod, orient="index").astype(float)  # None -> NaN ("–")
    sections.append(("Per modality", table_html(per_df)))
    excl = m["imbalance"]["excluded_from_fusion"]
    if excl:
        items = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in excl.items()
        )
        sections.append(("Left out of the fusion", f"<ul>{items}</ul>"))
    if result.plan:
        df = pd.DataFrame(result.plan)[["teacher", "student", "gap_bits", "gap_lo_bits",
                                        "enabled", "weight", "reason"]]  # fmt: skip
        sections.append(("Distillation plan (stage 1)", table_html(df)))
    else:
        sections.append(
            (
                "Distillation plan (stage 1)",
                "<p class='note'>no plan (single "
                "modality, distillation disabled, or baseline without stage 1)</p>",
            )
        )
    imb = "".join(img_tag(pngs[k], k) for k in ("imbalance",) if k in pngs)
    if imb:
        sections.append(
            (
                "Imbalance before / after",
                "<p class='note'>Probe macro-F1 on the "
                "encoder trained alone (stage 1) and on the jointly trained encoder; "
                "the difference is the under-optimisation gap.</p>" + imb,
            )
        )
    cms = "".join(img_tag(pngs[k], k) for k in ("confusion_val", "confusion_test") if k in pngs)
    if cms:
        sections.append(("Confusion matrices", cms))
    return html_page("balmm train", sections, subtitle=sub)
