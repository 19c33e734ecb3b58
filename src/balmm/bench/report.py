"""Tables, statistics, plots and the bench.md / bench.html report of a benchmark.

Every table is a function of the rows and the manifest only, so a merged set of
shards produces byte-identical tables to an unsharded run. Run times (which
differ between any two runs) live in timing.csv and bench.html only. The tables are
computed in :mod:`balmm.bench.tables`; this module renders and writes them.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from balmm.bench.aggregate import MANIFEST, TIMING, write_rows_csv
from balmm.bench.reference import REFERENCES
from balmm.bench.run import BenchResult
from balmm.bench.tables import (
    METRIC_LABELS,
    heads_table,
    method_order,
    paired_table,
    per_seed,
    reference_table,
    summary_table,
    wide_summary,
)
from balmm.outputs import OutputRun, output_dir, to_json


def _md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A plain GitHub markdown table (pandas' to_markdown needs tabulate, not installed)."""
    df = df.reset_index() if df.index.name or not isinstance(df.index, pd.RangeIndex) else df

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "–" if not np.isfinite(v) else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _paired_display(paired: pd.DataFrame) -> pd.DataFrame:
    """One row per method; per metric 'difference [95% bootstrap] p=..., wins/n'."""
    if paired.empty:
        return paired
    shown = ["accuracy", "macro_f1", "auroc"]
    d = paired[paired["metric"].isin(shown)]

    def cell(r: pd.Series) -> str:
        s = f"{r['mean_diff']:+.3f}"
        if np.isfinite(r["boot_low"]):
            s += f" [{r['boot_low']:+.3f}, {r['boot_high']:+.3f}]"
        if np.isfinite(r["wilcoxon_p"]):
            s += f" p={r['wilcoxon_p']:.2g}"
        return s + f", {int(r['wins'])}/{int(r['n_pairs'])}"

    d = d.assign(cell=d.apply(cell, axis=1))
    wide = d.pivot(index="method", columns="metric", values="cell")
    wide = wide.reindex(index=d["method"].drop_duplicates(), columns=shown)
    wide.columns = [METRIC_LABELS[m] for m in shown]
    return wide


def reproduce_command(manifest: dict) -> str:
    """The bench options of this result as a command line (INPUTS as recorded)."""
    spec = manifest["spec"]
    parts = ["balmm bench", "<INPUTS>"]
    parts.append(f"--balancers {','.join(spec['balancers']) or chr(39) * 2}")
    parts.append(f"--seeds {len(spec['seeds'])}")
    if spec["seeds"] and spec["seeds"][0] != 0:
        parts.append(f"--first-seed {spec['seeds'][0]}")
    if spec.get("cv"):
        parts.append(f"--cv {spec['cv']}")
    parts.append(f"--classic {','.join(spec['classic']) or 'none'}")
    for k, v in sorted(spec.get("config", {}).items()):
        parts.append(f"--set {k}={str(v).lower() if isinstance(v, bool) else v}")
    if spec.get("reference"):
        parts.append(f"--reference {spec['reference']}")
    return " ".join(parts)


def _classes(data: dict) -> str:
    mapping = data.get("label_mapping") or {}
    return ", ".join(
        f"{c} ({mapping[c]})" if mapping.get(c) not in (None, c) else c for c in data["classes"]
    )


def _markdown(result: BenchResult, tables: dict[str, pd.DataFrame]) -> str:
    man = result.manifest
    data, spec = man["data"], man["spec"]
    protocol = (
        f"repeated stratified {spec['cv']}-fold cross-validation over all labelled samples "
        f"({len(spec['seeds'])} repeats; per-seed values are means over folds)"
        if spec.get("cv")
        else f"fixed train/test split ({data['split_source']}); {len(spec['seeds'])} seeds"
    )
    mods = ", ".join(f"{n} ({s[0]}x{s[1]})" for n, s in data["modalities"].items())
    lines = [
        "# balmm bench",
        "",
        f"- data: {data['source']}; {data['n_labelled']} labelled samples "
        f"(train {data['n_train']}, test {data['n_test']}); classes {_classes(data)}",
        f"- modalities: {mods}",
        f"- protocol: {protocol}. Balancers select on a validation split carved from the "
        "training samples; classic floors tune inside the training samples; the test "
        "samples are scored once.",
        f"- command: `{reproduce_command(man)}`",
        "",
        "## Test metrics per method (mean ± sd [95% t-interval of the mean] over seeds)",
        "",
        _md_table(tables["wide"]),
        "",
    ]
    if not tables["paired"].empty:
        ref = tables["paired"]["reference"].iloc[0]
        lines += [
            f"## Paired comparison: {ref} minus each method (per seed)",
            "",
            "Positive = better for " + ref + ". Each cell: mean per-seed difference [95% "
            "percentile bootstrap], p of the two-sided Wilcoxon signed-rank test, seeds where "
            f"{ref} is higher. All four metrics (with balanced accuracy) are in paired.csv.",
            "",
            _md_table(_paired_display(tables["paired"])),
            "",
        ]
    if not tables["heads"].empty:
        lines += [
            "## Per-modality head macro-F1 (test, mean over seeds)",
            "",
            "Each balancer's unimodal heads beside the same modality trained alone: a "
            "weak head far below its single-modality floor is an under-trained modality.",
            "",
            _md_table(tables["heads"].set_index("method")),
            "",
        ]
    if "reference" in tables:
        ref = REFERENCES[spec["reference"]]
        lines += [
            f"## {ref['title']}",
            "",
            ref["protocol"],
            "",
            _md_table(tables["reference"]),
            "",
        ]
    return "\n".join(lines)


def _plots(result: BenchResult, tables: dict[str, pd.DataFrame], plots: Path) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    from balmm.report.html import save_figure

    figs: dict[str, bytes] = {}
    heads = tables["heads"]
    if not heads.empty:
        cols = [c for c in heads.columns if c != "method"]
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(heads) + 2), 4))
        width = 0.8 / len(cols)
        x = np.arange(len(heads))
        for i, c in enumerate(cols):
            ax.bar(x + i * width, heads[c].to_numpy(dtype=float), width, label=c)
        ax.set_xticks(x + width * (len(cols) - 1) / 2)
        ax.set_xticklabels(heads["method"], rotation=20, ha="right")
        ax.set_ylabel("test macro-F1 (mean over seeds)")
        ax.set_ylim(0, 1)
        ax.set_title("Per-modality heads vs fused, per method")
        ax.legend(fontsize=8, ncol=min(len(cols), 4))
        figs["head_f1"] = save_figure(fig, plots / "head_f1.png")
    ps = per_seed(result.rows)
    order = method_order(result.rows)
    fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(order) + 1)))
    data = [ps.loc[ps["method"] == m, "macro_f1"].dropna().to_numpy() for m in order]
    for i, d in enumerate(data):
        ax.plot(d, np.full(len(d), i), "o", alpha=0.5, ms=4, color="k")
        if len(d):
            ax.errorbar(d.mean(), i, xerr=d.std(ddof=1) if len(d) > 1 else 0, fmt="D",
                        color="C3", capsize=4)  # fmt: skip
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set_xlabel("test macro-F1 per seed")
    ax.set_title("Spread over seeds")
    figs["macro_f1"] = save_figure(fig, plots / "macro_f1.png")
    return figs


def build_tables(result: BenchResult) -> dict[str, pd.DataFrame]:
    rows = result.rows
    modalities = list(result.manifest["data"]["modalities"])
    summary = summary_table(rows)
    tables = {
        "summary": summary,
        "wide": wide_summary(summary),
        "paired": paired_table(rows),
        "heads": heads_table(rows, modalities),
    }
    ref = result.manifest["spec"].get("reference")
    if ref:  # validated by BenchSpec
        tables["reference"] = reference_table(ref, summary, rows)
    return tables


def write_report(
    result: BenchResult, out: str | Path | OutputRun, command: str = "bench"
) -> dict[str, pd.DataFrame]:
    """Write bench.csv, summary.csv, paired.csv, heads.csv, bench.md, bench.html,
    plots/*.png, timing.csv and manifest.json into ``out`` (atomically)."""
    from balmm.report.html import html_page, img_tag, table_html

    tables = build_tables(result)
    with output_dir(out, command) as tmp:
        write_rows_csv(result.rows, tmp / "bench.csv")
        write_rows_csv(tables["summary"], tmp / "summary.csv")
        write_rows_csv(tables["paired"], tmp / "paired.csv")
        write_rows_csv(tables["heads"], tmp / "heads.csv")
        result.timing.to_csv(tmp / TIMING, index=False)
        (tmp / MANIFEST).write_text(to_json(result.manifest, indent=2) + "\n")
        md = _markdown(result, tables)
        (tmp / "bench.md").write_text(md + "\n")
        figs = _plots(result, tables, tmp / "plots")
        timing = result.timing.groupby("method", sort=False)["seconds"].agg(["count", "sum"])
        timing.columns = ["units", "seconds (sum)"]
        man = result.manifest
        sections = [
            ("Data and protocol", "<pre>" + html.escape(md.split("\n## ")[0]) + "</pre>"),
            ("Test metrics per method", table_html(tables["wide"])),
        ]
        if not tables["paired"].empty:
            sections.append(
                ("Paired comparison (per seed)", table_html(_paired_display(tables["paired"])))
            )
        if "head_f1" in figs:
            sections.append(
                ("Per-modality heads", table_html(tables["heads"].set_index("method"))
                 + img_tag(figs["head_f1"], "per-modality head F1"))
            )  # fmt: skip
        sections.append(("Spread over seeds", img_tag(figs["macro_f1"], "macro-F1 per seed")))
        if "reference" in tables:
            ref = REFERENCES[man["spec"]["reference"]]
            sections.append(
                (ref["title"], f"<p class='note'>{html.escape(ref['protocol'])}</p>"
                 + table_html(tables["reference"]))
            )  # fmt: skip
        sections.append(("Run time (this run's machine)", table_html(timing, "{:.1f}")))
        (tmp / "bench.html").write_text(
            html_page("balmm bench", sections, subtitle=man["data"]["source"])
        )
    return tables
