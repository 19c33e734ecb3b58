"""Plots of a training run: loss weights and validation F1 over epochs, imbalance (trained
alone vs jointly), per-assay contributions, confusion matrix and ROC curves.

Each takes a :class:`balmm.training.fit.TrainResult`, the matching dict or table, or a
``train --out`` folder, and an optional ``ax=``; each returns the Axes it drew on. Keys are
read generically (whatever heads, stages and splits the run recorded), so runs of every
balancer can be plotted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from balmm.errors import InputError
from balmm.pl._common import (
    class_names,
    modality_colors,
    new_axes,
    output_file,
    train_history,
    train_metrics,
)
from balmm.pl.basic import heatmap

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FUSED = "fused"


def _last_stage_with(history: list[dict], key: str) -> list[dict]:
    """The records of the last stage whose records carry ``key`` (stage 2 of a normal run)."""
    stages = [h.get("stage") for h in history if key in h]
    if not stages:
        return []
    stage = stages[-1]
    return [h for h in history if h.get("stage") == stage and key in h]


def _no_data(ax: Axes, what: str) -> Axes:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="#555")
    ax.set_axis_off()
    return ax


def _per_head_curves(
    result: Any,
    key: str,
    ax: Axes | None,
    size: tuple[float, float],
    ylabel: str,
    title: str,
    lw: float = 1.4,
) -> Axes:
    """One line per head of ``history[key]`` over the epochs of the last stage logging it,
    the fused head drawn thicker and the selected epoch marked."""
    recs = _last_stage_with(train_history(result), key)
    ax = new_axes(ax, size)
    if not recs:
        return _no_data(ax, f"no per-epoch {ylabel} in this run's history")
    heads = list(recs[0][key])
    colors = modality_colors(heads)
    epochs = [h["epoch"] for h in recs]
    for k in heads:
        ax.plot(
            epochs,
            [h[key].get(k, np.nan) for h in recs],
            label=k,
            color=colors[k],
            lw=2.2 if k == FUSED else lw,
        )
    _mark_selected(ax, recs)
    ax.set_xlabel(f"epoch ({recs[0].get('stage', '')})")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def loss_weights(result: Any, *, ax: Axes | None = None) -> Axes:
    """Each head's loss weight per epoch of the balanced stage (as logged in history)."""
    return _per_head_curves(result, "weights", ax, (6.5, 3.4), "loss weight",
                            "Loss weights per head")  # fmt: skip


def validation_f1(result: Any, *, ax: Axes | None = None) -> Axes:
    """Validation macro-F1 of every head per epoch of the balanced stage, selected epoch marked."""
    return _per_head_curves(result, "val_f1", ax, (6.5, 3.6), "validation macro-F1",
                            "Validation macro-F1 per head", lw=1.3)  # fmt: skip


def _mark_selected(ax: Axes, recs: list[dict]) -> None:
    sel = [h["epoch"] for h in recs if h.get("selected")]
    if sel:
        ax.axvline(sel[-1], color="grey", ls="--", lw=1, label="selected epoch")


def imbalance(result: Any, *, split: str = "test", ax: Axes | None = None) -> Axes:
    """Probe macro-F1 of each encoder trained alone (stage 1) and jointly: the gap between
    the two bars is the under-optimisation the balanced training is meant to close."""
    gap = train_metrics(result).get("imbalance", {}).get("under_optimisation_gap") or {}
    mods = [m for m, v in gap.items() if f"alone_{split}" in v]
    ax = new_axes(ax, (max(4.5, 1.4 * len(mods) + 2), 3.4))
    if not mods:
        return _no_data(ax, "no alone-vs-joint measurement in this run")
    x = np.arange(len(mods))
    alone = [gap[m].get(f"alone_{split}") for m in mods]
    joint = [gap[m].get(f"joint_{split}") for m in mods]
    ax.bar(
        x - 0.2, np.array(alone, dtype=float), 0.4, label="encoder trained alone", color="#9bb3e8"
    )
    ax.bar(x + 0.2, np.array(joint, dtype=float), 0.4, label="trained jointly", color="#4a6fd1")
    ax.set_xticks(x, mods)
    ax.set_ylabel(f"probe macro-F1 ({split})")
    ax.set_ylim(0, 1.05)
    ax.set_title("Imbalance: each encoder alone vs in the joint model")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return ax


def contributions(result: Any, *, split: str = "test", ax: Axes | None = None) -> Axes:
    """Each assay's contribution to the fused model (Shapley value of fused macro-F1 over
    subsets of assays), with the final loss weight of its head written beside the bar."""
    imb = train_metrics(result).get("imbalance", {})
    values = {
        m: v
        for m, v in (imb.get("contributions", {}).get(split) or {}).items()
        if isinstance(v, (int, float))
    }
    ax = new_axes(ax, (6.5, 0.5 * max(len(values), 1) + 1.4))
    if not values:
        return _no_data(ax, f"no per-assay contributions for {split}")
    mods = list(values)
    colors = modality_colors(mods)
    ypos = np.arange(len(mods))[::-1]
    vals = np.array([values[m] for m in mods], dtype=float)
    ax.barh(ypos, vals, color=[colors[m] for m in mods], alpha=0.9)
    weights = imb.get("weights") or {}
    excluded = imb.get("excluded_from_fusion") or {}
    for y, m, v in zip(ypos, mods, vals, strict=True):
        note = "left out of the fusion" if m in excluded else ""
        if isinstance(weights.get(m), (int, float)):
            note = f"weight {weights[m]:.2f}" + (f"; {note}" if note else "")
        ax.text(max(v, 0), y, f"  {v:.3f}  {note}", va="center", fontsize=8)
    ax.axvline(0, color="#222", lw=0.8)
    ax.set_yticks(ypos, mods)
    ax.set_xlim(min(0.0, vals.min() * 1.2), max(vals.max(), 0.01) * 1.6)
    ax.set_xlabel(f"contribution to fused macro-F1 ({split}, Shapley value)")
    ax.set_title("Per-assay contribution")
    ax.grid(axis="x", alpha=0.3)
    return ax


def confusion_matrix(
    result: Any,
    *,
    split: str = "test",
    head: str = FUSED,
    classes: list[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Confusion matrix (rows: true class, columns: predicted) of one head on one split,
    with class names from the run's label mapping."""
    m = train_metrics(result)
    sm = m.get(split, {})
    entry = sm.get(FUSED) if head == FUSED else sm.get("modalities", {}).get(head)
    cm = (entry or {}).get("confusion_matrix")
    if not cm:
        raise InputError(f"no confusion matrix for head {head!r} on split {split!r}")
    names = classes or class_names(result, m["classes"])
    df = pd.DataFrame(np.asarray(cm, dtype=float), index=names, columns=names)
    k = len(names)
    ax = new_axes(ax, (3.4 + 0.5 * k, 2.8 + 0.45 * k))
    heatmap(
        df,
        fmt="{:.0f}",
        cmap="Blues",
        dark_low=False,
        cbar_label="samples",
        ax=ax,
        xlabel="predicted",
        ylabel="true",
        title=f"{split} · {head}",
    )
    return ax


def _predictions(obj: Any) -> pd.DataFrame:
    if isinstance(obj, pd.DataFrame):
        return obj
    if isinstance(obj, (str, Path)):
        p = output_file(obj, "predictions.csv", "a train output folder")
        return pd.read_csv(p, dtype={"true": str, "predicted": str})
    if hasattr(obj, "predictions"):
        return obj.predictions
    raise TypeError(f"expected a TrainResult, a predictions table or a path, not {type(obj)}")


def roc(
    result: Any,
    *,
    split: str = "test",
    classes: list[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """ROC curves of the fused head on ``split`` from the predicted probabilities: the
    positive class for two classes, one class-vs-rest curve per class otherwise."""
    from sklearn.metrics import RocCurveDisplay

    df = _predictions(result)
    if "split" in df:
        df = df[df["split"] == split]
    df = df[df["true"].notna()]
    codes = [c[len("proba_") :] for c in df.columns if c.startswith("proba_")]
    names = classes or class_names(result, codes)
    ax = new_axes(ax, (4.8, 4.4))
    if len(df) == 0 or df["true"].nunique() < 2:
        return _no_data(ax, f"ROC needs both classes among the labelled {split} samples")
    true = df["true"].astype(str).to_numpy()
    shown = [codes[-1]] if len(codes) == 2 else codes
    colors = modality_colors(names)
    for code in shown:
        name = names[codes.index(code)]
        if not (true == code).any():
            continue
        disp = RocCurveDisplay.from_predictions(
            true == code,
            df[f"proba_{code}"].to_numpy(),
            ax=ax,
            name=name if len(codes) > 2 else f"{name} (positive)",
            plot_chance_level=code == shown[-1],
        )
        disp.line_.set_color(colors[name])
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, fused head ({split}, n = {len(df)})")
    ax.legend(fontsize=8, loc="lower right")
    return ax
