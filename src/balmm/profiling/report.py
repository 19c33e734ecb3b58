"""profile.json / profile.md / profile.html / plots/*.png for a :class:`ProfileResult`."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from balmm.outputs import OutputRun, output_dir, output_path, to_json  # noqa: E402
from balmm.report.html import html_page, img_tag, save_figure, table_html  # noqa: E402
from balmm.report.plots import bars_with_ci, heatmap  # noqa: E402

if TYPE_CHECKING:
    from balmm.profiling.run import ProfileResult

CONCAT = "all (concatenated)"


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fmt_ci(v, ci, digits: int = 3) -> str:
    """``0.812 [0.760, 0.861]`` (dashes for missing values)."""
    return f"{_f(v, digits)} [{_f(ci[0], digits)}, {_f(ci[1], digits)}]"


# --------------------------------------------------------------------------- tables


def strength_table(r: ProfileResult) -> pd.DataFrame:
    def row(name: str, entry: dict) -> dict:  # a modality's entry, or the concatenation's
        p = entry["probe"]
        return {
            "modality": name,
            "n (train)": p["n_samples"],
            "macro-F1 [95% CI]": fmt_ci(p["macro_f1"], p["macro_f1_ci"]),
            "accuracy [95% CI]": fmt_ci(p["accuracy"], p["accuracy_ci"]),
            "balanced acc. [95% CI]": fmt_ci(p["balanced_accuracy"], p["balanced_accuracy_ci"]),
            "I(X;Y) bits [95% CI]": fmt_ci(entry["mi_label_bits"], entry["mi_label_bits_ci"]),
        }

    rows = [row(m, e) for m, e in r.modalities.items() if e.get("probe") is not None]
    rows.append(row(CONCAT, r.concatenated))
    return pd.DataFrame(rows).set_index("modality")


def quality_table(r: ProfileResult) -> pd.DataFrame:
    rows = []
    for m, e in r.modalities.items():
        rows.append(
            {
                "modality": m,
                "samples": e["n_samples"],
                "features": e["n_features"],
                "coverage": f"{e['coverage']:.0%}",
                "missing values": f"{e['missing_fraction']:.1%}",
                "zeros": f"{e['zero_fraction']:.1%}",
                "count-like": "yes" if e["count_like"] else "no",
                "dyn. range (log10)": _f(e["dynamic_range_log10"], 1),
                "near-constant": f"{e['near_constant_fraction']:.1%}",
                "eff. dim (90%)": _f(e["effective_dim_90"], 0),
                "outliers": e["n_outlier_samples"],
            }
        )
    return pd.DataFrame(rows).set_index("modality")


def pairs_table(r: ProfileResult) -> pd.DataFrame:
    rows = [
        {
            "a": p["a"],
            "b": p["b"],
            "estimator": p["estimator"],
            "I(Z_a;Z_b) bits [95% CI]": fmt_ci(p["mi_bits"], p["mi_bits_ci"]),
            "n": p["n_samples"],
        }
        for p in r.pairs
    ]
    return pd.DataFrame(rows)


def plan_table(r: ProfileResult) -> pd.DataFrame:
    rows = [
        {
            "teacher": e.teacher,
            "student": e.student,
            "gap bits": _f(e.gap_bits),
            "gap lower": _f(e.gap_lo_bits),
            "enabled": "yes" if e.enabled else "no",
            "weight": _f(e.weight, 2),
            "reason": e.reason,
        }
        for e in r.kd_plan
    ]
    return pd.DataFrame(rows)


def shapley_table(r: ProfileResult) -> pd.DataFrame:
    s = r.shapley
    df = pd.DataFrame(
        {
            "Shapley (macro-F1)": {m: _f(v) for m, v in s["values"].items()},
            "leave-one-out delta": {m: _f(v) for m, v in s["leave_one_out"].items()},
        }
    )
    df.index.name = "modality"
    return df


def _md_table(df: pd.DataFrame, index: bool = True) -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    d = df.reset_index() if index else df
    cols = [str(c) for c in d.columns]

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in d.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def mi_matrix(r: ProfileResult) -> pd.DataFrame:
    """Pairwise MI of the primary estimator plus a ``label`` row/column (I(X_m;Y))."""
    names = list(r.modalities) + ["label"]
    mat = pd.DataFrame(np.nan, index=names, columns=names)
    primary = r.settings["primary_estimator"]
    for p in r.pairs:
        if p["estimator"] == primary:
            mat.loc[p["a"], p["b"]] = mat.loc[p["b"], p["a"]] = p["mi_bits"]
    for m, e in r.modalities.items():
        if "mi_label_bits" in e:
            mat.loc[m, "label"] = mat.loc["label", m] = e["mi_label_bits"]
    return mat


def per_class_matrix(r: ProfileResult) -> pd.DataFrame:
    rows = {m: e["probe"]["per_class_f1"] for m, e in r.modalities.items() if "probe" in e}
    rows[CONCAT] = r.concatenated["probe"]["per_class_f1"]
    return pd.DataFrame(rows).T.reindex(columns=r.dataset["classes"])


def plan_figure(r: ProfileResult) -> plt.Figure:
    """Modalities on a circle; arrows teacher -> student for enabled KD edges."""
    names = [m for m in r.modalities if "probe" in r.modalities[m]]
    n = len(names)
    fig, ax = plt.subplots(figsize=(6, 5))
    ang = np.linspace(np.pi / 2, np.pi / 2 + 2 * np.pi, n, endpoint=False)
    pos = {m: (np.cos(a), np.sin(a)) for m, a in zip(names, ang, strict=True)}
    enabled = [e for e in r.kd_plan if e.enabled]
    for e in r.kd_plan:
        if e.enabled:
            continue
        (x0, y0), (x1, y1) = pos[e.teacher], pos[e.student]
        ax.plot([x0, x1], [y0, y1], color="#ccc", lw=0.6, ls=":", zorder=1)
    for e in enabled:
        arrow = FancyArrowPatch(
            pos[e.teacher],
            pos[e.student],
            arrowstyle="-|>",
            mutation_scale=18,
            lw=1 + 3 * e.weight,
            color="#2e7d32",
            shrinkA=28,
            shrinkB=28,
            connectionstyle="arc3,rad=0.15",
            zorder=2,
        )
        ax.add_patch(arrow)
        mx = (pos[e.teacher][0] + pos[e.student][0]) / 2
        my = (pos[e.teacher][1] + pos[e.student][1]) / 2
        ax.text(
            mx,
            my,
            f"gap {e.gap_bits:.2f}b\nw {e.weight:.2f}",
            fontsize=8,
            ha="center",
            color="#2e7d32",
            zorder=3,
            bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    for m in names:
        e = r.modalities[m]
        ax.scatter(*pos[m], s=2600, color="#4a6fd1", alpha=0.9, zorder=4)
        ax.text(
            pos[m][0],
            pos[m][1],
            f"{m}\nF1 {e['probe']['macro_f1']:.2f}",
            ha="center",
            va="center",
            color="white",
            fontsize=7,
            zorder=5,
        )
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    title = "Distillation plan (green arrows: enabled teacher -> student)"
    if not enabled:
        title = "Distillation plan: no edge enabled (see the table for reasons)"
    ax.set_title(title, fontsize=10)
    return fig


def make_figures(r: ProfileResult, plots: Path) -> dict[str, bytes]:
    """Render every figure into ``plots/`` and return name -> PNG bytes."""
    figs: dict[str, bytes] = {}
    names = [m for m in r.modalities if "probe" in r.modalities[m]]
    labels = names + [CONCAT]
    probes = [r.modalities[m]["probe"] for m in names] + [r.concatenated["probe"]]
    colors = ["#4a6fd1"] * len(names) + ["#888"]
    figs["macro_f1"] = save_figure(
        bars_with_ci(
            labels,
            [p["macro_f1"] for p in probes],
            [tuple(p["macro_f1_ci"]) for p in probes],
            xlabel="cross-validated probe macro-F1 (95% bootstrap CI)",
            title="Unimodal strength",
            refline=r.concatenated["probe"]["null_macro_f1_95"],
            refline_label="95th pct. of shuffled-label macro-F1",
            colors=colors,
        ),
        plots / "macro_f1.png",
    )
    figs["mi_heatmap"] = save_figure(
        heatmap(
            mi_matrix(r),
            title=f"Mutual information, bits ({r.settings['primary_estimator']}; label: H(Y)-CE)",
            cbar_label="bits",
            vmin=0,
        ),
        plots / "mi_heatmap.png",
    )
    s = r.shapley
    order = sorted(s["values"], key=lambda m: -s["values"][m])
    fig = bars_with_ci(
        order,
        [s["values"][m] for m in order],
        None,
        xlabel="contribution to probe macro-F1",
        title=f"Shapley values ({s['method']}); dots = leave-one-out delta",
    )
    ax = fig.axes[0]
    ypos = np.arange(len(order))[::-1]
    ax.scatter([s["leave_one_out"][m] for m in order], ypos, color="#c0392b", zorder=3, s=20)
    ax.axvline(0, color="#222", lw=0.8)
    figs["shapley"] = save_figure(fig, plots / "shapley.png")
    figs["per_class_f1"] = save_figure(
        heatmap(
            per_class_matrix(r),
            title="Per-class F1 (which assay recognises which class)",
            cbar_label="F1",
            vmin=0,
            vmax=1,
            cmap="magma",
        ),
        plots / "per_class_f1.png",
    )
    figs["kd_plan"] = save_figure(plan_figure(r), plots / "kd_plan.png")
    return figs


# --------------------------------------------------------------------------- documents


def _subsampling_note(r: ProfileResult) -> str:
    st = r.settings
    notes = [
        f"Probes: {st['n_folds']}-fold stratified cross-validation ({st['probe']}) on "
        f"{r.dataset['n_train_used']} of {r.dataset['n_train_samples']} training samples; "
        f"intervals: {st['n_boot']} bootstrap replicates. The test split is not used.",
        f"Pairwise MI: PCA embeddings with as many components as n supports "
        f"({st['pair_embedding_dims']}), at most "
        f"{st['max_samples']} samples per pair (random subsample above that, see n), "
        f"{st['n_boot_pair_mi']} half-sample replicates for the intervals.",
        "I(X;Y) is a lower bound (H(Y) minus the cross-validated probe cross-entropy).",
    ]
    sub = [p for p in r.pairs if p.get("subsampled")]
    if sub:
        notes.append(
            f"{len(sub)} pair estimate(s) used a random subsample of {st['max_samples']} samples."
        )
    return notes


def render_markdown(r: ProfileResult) -> str:
    parts = [
        "# balmm profile",
        "",
        f"Source: {r.dataset['source']}  ",
        f"Classes: {', '.join(f'{c} ({n})' for c, n in r.dataset['train_class_counts'].items())}"
        " (training samples)  ",
        f"Split: {r.dataset['split_source']}",
        "",
        "## Verdict",
        "",
        *[f"- {s}" for s in r.verdict["sentences"]],
        "",
    ]
    if r.warnings:
        parts += ["### Warnings", "", *[f"- {w}" for w in r.warnings], ""]
    parts += [
        "## Unimodal strength and label information",
        "",
        _md_table(strength_table(r)),
        "",
        "![macro-F1](plots/macro_f1.png)",
        "",
        "![per-class F1](plots/per_class_f1.png)",
        "",
        "## Mutual information between modalities",
        "",
        _md_table(pairs_table(r), index=False) if r.pairs else "(no pair could be estimated)",
        "",
        "![MI heatmap](plots/mi_heatmap.png)",
        "",
        "## Distillation plan",
        "",
        _md_table(plan_table(r), index=False) if r.kd_plan else "(single modality)",
        "",
        "![distillation plan](plots/kd_plan.png)",
        "",
        "## Contributions",
        "",
        _md_table(shapley_table(r)),
        "",
        f"Redundancy: I(all;Y) = {_f(r.redundancy['mi_all_label_bits'])} bits vs "
        f"sum of I(X_m;Y) = {_f(r.redundancy['sum_mi_label_bits'])} bits "
        f"(H(Y) = {_f(r.redundancy['label_entropy_bits'])} bits).",
        "",
        "![Shapley](plots/shapley.png)",
        "",
        "## Data quality",
        "",
        _md_table(quality_table(r)),
        "",
        "## How these numbers were made",
        "",
        *[f"- {n}" for n in _subsampling_note(r)],
        f"- Wall time: {r.timings_s.get('total', float('nan')):.1f} s.",
        "",
        "See docs/profile.md for what each number means and how to read it.",
        "",
    ]
    return "\n".join(parts)


def render_html(r: ProfileResult, figs: dict[str, bytes]) -> str:
    verdict = (
        "<div class='verdict'><ul>"
        + "".join(f"<li>{html.escape(s)}</li>" for s in r.verdict["sentences"])
        + "</ul></div>"
    )
    if r.warnings:
        verdict += (
            "<p><b>Warnings</b></p><ul>"
            + "".join(f"<li>{html.escape(w)}</li>" for w in r.warnings)
            + "</ul>"
        )
    notes = (
        "<ul class='note'>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in _subsampling_note(r))
        + "</ul>"
    )
    redund = (
        f"<p>Redundancy: I(all;Y) = {_f(r.redundancy['mi_all_label_bits'])} bits vs sum of "
        f"I(X<sub>m</sub>;Y) = {_f(r.redundancy['sum_mi_label_bits'])} bits "
        f"(H(Y) = {_f(r.redundancy['label_entropy_bits'])} bits).</p>"
    )
    sections = [
        ("Verdict", verdict),
        (
            "Unimodal strength and label information",
            table_html(strength_table(r))
            + img_tag(figs["macro_f1"], "macro-F1 per modality")
            + img_tag(figs["per_class_f1"], "per-class F1"),
        ),
        (
            "Mutual information between modalities",
            (table_html(pairs_table(r)) if r.pairs else "<p>(no pair could be estimated)</p>")
            + img_tag(figs["mi_heatmap"], "MI heatmap"),
        ),
        (
            "Distillation plan",
            (table_html(plan_table(r)) if r.kd_plan else "<p>(single modality)</p>")
            + img_tag(figs["kd_plan"], "distillation plan"),
        ),
        (
            "Contributions",
            table_html(shapley_table(r)) + redund + img_tag(figs["shapley"], "Shapley values"),
        ),
        ("Data quality", table_html(quality_table(r))),
        ("How these numbers were made", notes),
    ]
    subtitle = f"{r.dataset['source']} · split: {r.dataset['split_source']}"
    return html_page("balmm profile", sections, subtitle=subtitle)


def write_report(r: ProfileResult, out: str | Path | OutputRun) -> Path:
    """Write the report folder atomically; returns ``out``."""
    with output_dir(out, "profile") as tmp:
        figs = make_figures(r, tmp / "plots")
        (tmp / "profile.json").write_text(to_json(r.to_dict(), indent=2) + "\n", "utf-8")
        (tmp / "profile.md").write_text(render_markdown(r), "utf-8")
        (tmp / "profile.html").write_text(render_html(r, figs), "utf-8")
        if r.pairing is not None:
            r.pairing.to_csv(tmp / "pairing.csv", index_label="sample")
    return output_path(out)
