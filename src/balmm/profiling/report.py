"""profile.json / profile.md / profile.html / plots/*.png for a :class:`ProfileResult`."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from balmm import pl
from balmm.outputs import OutputRun, output_dir, output_path, to_json
from balmm.pl.profile import CONCAT
from balmm.report.html import figures, html_page, img_tag, plan_reasons, render, table_html

if TYPE_CHECKING:
    from balmm.profiling.result import ProfileResult


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fmt_ci(v, ci, digits: int = 3) -> str:
    """``0.812 [0.760, 0.861]`` (dashes for missing values)."""
    return f"{_f(v, digits)} [{_f(ci[0], digits)}, {_f(ci[1], digits)}]"


def _class_counts(r: ProfileResult) -> str:
    """``Normal control (120), Alzheimer's disease (125)``: class names, training counts."""
    mapping = r.dataset.get("label_mapping") or {}
    counts = r.dataset["train_class_counts"]
    return ", ".join(f"{mapping.get(c, c)} ({n})" for c, n in counts.items())


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
            "modality A": p["a"],
            "modality B": p["b"],
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
            "CCH gap (bits)": _f(e.gap_bits),
            "gap, lower bound": _f(e.gap_lo_bits),
            "enabled": "yes" if e.enabled else "no",
            "weight": _f(e.weight, 2),
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

FIGURES = {  # file stem -> the balmm.pl function that draws it
    "macro_f1": pl.unimodal_strength,
    "per_class_f1": pl.per_class_f1,
    "mi_heatmap": pl.mi_heatmap,
    "kd_plan": pl.kd_plan,
    "shapley": pl.shapley,
}


def make_figures(r: ProfileResult, plots: Path) -> dict[str, bytes]:
    """Render every figure into ``plots/`` and return name -> PNG bytes."""
    d = r.to_dict()
    return {name: render(fn, plots / f"{name}.png", d) for name, fn in FIGURES.items()}


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
        f"Classes: {_class_counts(r)} (training samples)  ",
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
        *[f"- {e.teacher} -> {e.student}: {e.reason}" for e in r.kd_plan],
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
            + figures(
                img_tag(figs["macro_f1"], "macro-F1 per modality"),
                img_tag(figs["per_class_f1"], "per-class F1"),
            ),
        ),
        (
            "Mutual information between modalities",
            (table_html(pairs_table(r)) if r.pairs else "<p>(no pair could be estimated)</p>")
            + img_tag(figs["mi_heatmap"], "MI heatmap"),
        ),
        (
            "Distillation plan",
            (
                table_html(plan_table(r)) + plan_reasons(e.to_dict() for e in r.kd_plan)
                if r.kd_plan
                else "<p>(single modality)</p>"
            )
            + img_tag(figs["kd_plan"], "distillation plan"),
        ),
        (
            "Contributions",
            table_html(shapley_table(r)) + redund + img_tag(figs["shapley"], "Shapley values"),
        ),
        ("Data quality", table_html(quality_table(r))),
        ("How these numbers were made", notes),
    ]
    subtitle = (
        f"{r.dataset['source']} · split: {r.dataset['split_source']} · "
        f"classes (training samples): {_class_counts(r)}"
    )
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
