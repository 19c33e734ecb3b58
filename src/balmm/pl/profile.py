"""Plots of a profile (or of a training run's distillation plan): unimodal strength, the
pair-MI heatmap, the distillation plan, Shapley contributions and per-class F1.

Each takes a :class:`balmm.profiling.result.ProfileResult`, its ``to_dict()`` (profile.json)
or a ``profile --out`` folder, and an optional ``ax=``; each returns the Axes it drew on.
:func:`kd_plan` also takes a training run (its ``metrics["kd_plan"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from balmm.pl._common import new_axes, profile_dict, train_metrics
from balmm.pl.basic import bars_with_ci, heatmap, heatmap_size

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CONCAT = "all (concatenated)"


def _probed(p: dict) -> list[str]:
    return [m for m, e in p["modalities"].items() if e.get("probe") is not None]


def mi_matrix(profile: Any) -> pd.DataFrame:
    """Pairwise MI (bits, the primary estimator) plus a ``label`` row/column with I(X_m;Y)."""
    p = profile_dict(profile)
    names = list(p["modalities"]) + ["label"]
    mat = pd.DataFrame(np.nan, index=names, columns=names)
    primary = p["settings"]["primary_estimator"]
    for pair in p["pairs"]:
        if pair["estimator"] == primary:
            mat.loc[pair["a"], pair["b"]] = mat.loc[pair["b"], pair["a"]] = pair["mi_bits"]
    for m, e in p["modalities"].items():
        if e.get("mi_label_bits") is not None:
            mat.loc[m, "label"] = mat.loc["label", m] = e["mi_label_bits"]
    return mat


def mi_heatmap(profile: Any, *, ax: Axes | None = None) -> Axes:
    """Heatmap of I(Z_a;Z_b) between modalities and I(X_m;Y) with the label, in bits."""
    p = profile_dict(profile)
    mat = mi_matrix(p)
    ax = new_axes(ax, heatmap_size(mat))
    return heatmap(
        mat,
        vmin=0,
        cbar_label="bits",
        ax=ax,
        title=f"Mutual information, bits ({p['settings']['primary_estimator']}; label: H(Y) - CE)",
    )


def unimodal_strength(profile: Any, *, ax: Axes | None = None) -> Axes:
    """Cross-validated probe macro-F1 per modality and concatenated, with 95% intervals and
    the shuffled-label null."""
    p = profile_dict(profile)
    names = _probed(p)
    probes = [p["modalities"][m]["probe"] for m in names] + [p["concatenated"]["probe"]]
    return bars_with_ci(
        names + [CONCAT],
        [q["macro_f1"] for q in probes],
        [tuple(q["macro_f1_ci"]) for q in probes],
        xlabel="cross-validated probe macro-F1 (95% bootstrap CI)",
        title="Unimodal strength",
        refline=p["concatenated"]["probe"].get("null_macro_f1_95"),
        refline_label="95th pct. of shuffled-label macro-F1",
        colors=["#4a6fd1"] * len(names) + ["#888"],
        ax=ax,
    )


def shapley(profile: Any, *, ax: Axes | None = None) -> Axes:
    """Shapley contribution of each modality to the probe macro-F1 (bars) and the
    leave-one-out delta (dots)."""
    s = profile_dict(profile)["shapley"]
    order = sorted(s["values"], key=lambda m: -s["values"][m])
    ax = bars_with_ci(
        order,
        [s["values"][m] for m in order],
        xlabel="contribution to probe macro-F1",
        title=f"Shapley values ({s['method']}); dots = leave-one-out delta",
        ax=ax,
    )
    ypos = np.arange(len(order))[::-1]
    loo = s.get("leave_one_out") or {}
    ax.scatter([loo.get(m, np.nan) for m in order], ypos, color="#c0392b", zorder=3, s=20)
    ax.axvline(0, color="#222", lw=0.8)
    return ax


def per_class_matrix(profile: Any) -> pd.DataFrame:
    """Per-class probe F1: one row per modality (and concatenated), one column per class."""
    p = profile_dict(profile)
    rows = {m: p["modalities"][m]["probe"]["per_class_f1"] for m in _probed(p)}
    rows[CONCAT] = p["concatenated"]["probe"]["per_class_f1"]
    classes = p["dataset"]["classes"]
    df = pd.DataFrame(rows).T.reindex(columns=classes)
    mapping = p["dataset"].get("label_mapping") or {}
    df.columns = [str(mapping.get(c, c)) for c in classes]
    return df


def per_class_f1(profile: Any, *, ax: Axes | None = None) -> Axes:
    """Heatmap of per-class probe F1: which assay recognises which class."""
    mat = per_class_matrix(profile)
    ax = new_axes(ax, heatmap_size(mat))
    return heatmap(
        mat,
        title="Per-class F1 (which assay recognises which class)",
        cbar_label="F1",
        vmin=0,
        vmax=1,
        cmap="magma",
        ax=ax,
    )


def _plan_source(obj: Any) -> tuple[list[dict], dict[str, float], str]:
    """(edges, strength per modality, what the strength is) of a profile or a training run."""
    if isinstance(obj, dict):
        d = obj
    elif hasattr(obj, "metrics"):  # a TrainResult
        d = obj.metrics
    elif isinstance(obj, (str, Path)) and (Path(obj) / "metrics.json").is_file():
        d = train_metrics(obj)
    else:
        d = profile_dict(obj)
    if "modalities" in d and "settings" in d:  # profile.json
        names = _probed(d)
        return d["kd_plan"], {m: d["modalities"][m]["probe"]["macro_f1"] for m in names}, "F1"
    stage1 = d.get("stage1") or {}
    names = list(d.get("label_mi_bits") or stage1)
    strength = {m: (stage1.get(m) or {}).get("val_macro_f1", np.nan) for m in names}
    return d.get("kd_plan") or [], strength, "val F1"


def kd_plan(obj: Any, *, ax: Axes | None = None) -> Axes:
    """The distillation plan: modalities on a circle, an arrow teacher -> student for each
    enabled edge (width: the teacher's weight), dotted grey lines for the edges not enabled.
    An enabled edge whose distillation was reverted (``accepted`` false) is drawn dashed."""
    from matplotlib.patches import FancyArrowPatch

    edges, strength, what = _plan_source(obj)
    names = list(strength) or sorted({e["teacher"] for e in edges} | {e["student"] for e in edges})
    ax = new_axes(ax, (6, 5))
    ang = np.linspace(np.pi / 2, np.pi / 2 + 2 * np.pi, max(len(names), 1), endpoint=False)
    pos = {m: (np.cos(a), np.sin(a)) for m, a in zip(names, ang, strict=False)}
    edges = [e for e in edges if e["teacher"] in pos and e["student"] in pos]
    for e in edges:
        if not e.get("enabled"):
            (x0, y0), (x1, y1) = pos[e["teacher"]], pos[e["student"]]
            ax.plot([x0, x1], [y0, y1], color="#ccc", lw=0.6, ls=":", zorder=1)
    enabled = [e for e in edges if e.get("enabled")]
    for e in enabled:
        kept = e.get("accepted", True) is not False
        color = "#2e7d32" if kept else "#e67e22"
        ax.add_patch(
            FancyArrowPatch(
                pos[e["teacher"]],
                pos[e["student"]],
                arrowstyle="-|>",
                mutation_scale=18,
                lw=1 + 3 * float(e.get("weight") or 0),
                color=color,
                ls="-" if kept else "--",
                shrinkA=28,
                shrinkB=28,
                connectionstyle="arc3,rad=0.15",
                zorder=2,
            )
        )
        mx = (pos[e["teacher"]][0] + pos[e["student"]][0]) / 2
        my = (pos[e["teacher"]][1] + pos[e["student"]][1]) / 2
        label = f"gap {e['gap_bits']:.2f} b\nw {float(e.get('weight') or 0):.2f}"
        ax.text(
            mx,
            my,
            label + ("" if kept else "\nreverted"),
            fontsize=8,
            ha="center",
            color=color,
            zorder=3,
            bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    for m in names:
        ax.scatter(*pos[m], s=2600, color="#4a6fd1", alpha=0.9, zorder=4)
        v = strength.get(m, np.nan)
        sub = f"\n{what} {v:.2f}" if np.isfinite(v) else ""
        ax.text(*pos[m], f"{m}{sub}", ha="center", va="center", color="white", fontsize=7, zorder=5)
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
    ax.set_axis_off()
    title = "Distillation plan (arrows: enabled teacher -> student)"
    if not enabled:
        title = "Distillation plan: no edge enabled (see the table for reasons)"
    ax.set_title(title, fontsize=10)
    return ax
