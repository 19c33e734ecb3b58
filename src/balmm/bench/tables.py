"""The statistics tables of a benchmark, each a function of the rows only: per-seed means,
the summary (mean, sd, t-interval), balmm paired against every other method (bootstrap
interval, Wilcoxon signed-rank test, wins), per-modality heads, and published references.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from balmm.bench.classic import CLASSIC_METHODS, METRICS
from balmm.bench.reference import REFERENCES
from balmm.bench.spec import HEAD_PREFIX

METRIC_LABELS = {
    "accuracy": "ACC",
    "balanced_accuracy": "BACC",
    "macro_f1": "macro-F1",
    "weighted_f1": "weighted-F1",
    "auroc": "AUROC",
}
PAIRED_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
N_BOOT = 2000


def per_seed(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over folds for each (method, seed): seeds are the unit of replication."""
    value_cols = [c for c in rows.columns if c in METRICS or c.startswith(HEAD_PREFIX)]
    return rows.groupby(["method", "seed"], sort=False)[value_cols].mean().reset_index()


def _methods(rows: pd.DataFrame, kind: str) -> list[str]:
    """Methods of one kind (``balancer`` or ``classic``) in the order given."""
    return rows.loc[rows["kind"] == kind, "method"].drop_duplicates().tolist()


def method_order(rows: pd.DataFrame) -> list[str]:
    """Balancers first (in the order given), then classic floors."""
    return _methods(rows, "balancer") + _methods(rows, "classic")


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Long table: method, metric, n (seeds), mean, sd, t-based 95% interval of the mean."""
    ps = per_seed(rows)
    out = []
    for method in method_order(rows):
        sub = ps[ps["method"] == method]
        for metric in METRICS:
            v = sub[metric].dropna().to_numpy()
            n = len(v)
            mean = float(v.mean()) if n else np.nan
            sd = float(v.std(ddof=1)) if n > 1 else np.nan
            if n > 1:
                half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n))
                lo, hi = mean - half, mean + half
            else:
                lo = hi = np.nan
            out.append(
                {"method": method, "metric": metric, "n": n, "mean": mean, "sd": sd,
                 "ci_low": lo, "ci_high": hi}
            )  # fmt: skip
    return pd.DataFrame(out)


def _bootstrap_ci(d: np.ndarray, seed: int = 0) -> tuple[float, float]:
    if len(d) < 2:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(N_BOOT, len(d)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _wilcoxon_p(d: np.ndarray) -> float:
    if len(d) < 2 or np.all(d == 0):
        return np.nan
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def reference_method(rows: pd.DataFrame) -> str | None:
    bal = _methods(rows, "balancer")
    if "balmm" in bal:
        return "balmm"
    return bal[0] if bal else None


def paired_table(rows: pd.DataFrame, ref: str | None = None) -> pd.DataFrame:
    """``ref`` (default balmm) minus each other method, paired by seed (mean over folds).

    Columns: method, metric, n_pairs, mean_diff, boot_low, boot_high (95% percentile
    bootstrap of the mean difference, 2000 resamples), wilcoxon_p (two-sided signed-rank),
    wins (seeds where ``ref`` is higher).
    """
    ref = ref or reference_method(rows)
    cols = ["reference", "method", "metric", "n_pairs", "mean_diff", "boot_low", "boot_high",
            "wilcoxon_p", "wins"]  # fmt: skip
    if ref is None:
        return pd.DataFrame(columns=cols)
    ps = per_seed(rows).set_index(["method", "seed"])
    base = ps.loc[ref]
    out = []
    for method in method_order(rows):
        if method == ref:
            continue
        other = ps.loc[method]
        seeds = base.index.intersection(other.index)
        for metric in PAIRED_METRICS:
            d = (base.loc[seeds, metric] - other.loc[seeds, metric]).dropna().to_numpy()
            lo, hi = _bootstrap_ci(d)
            out.append(
                {"reference": ref, "method": method, "metric": metric, "n_pairs": len(d),
                 "mean_diff": float(d.mean()) if len(d) else np.nan, "boot_low": lo,
                 "boot_high": hi, "wilcoxon_p": _wilcoxon_p(d), "wins": int((d > 0).sum())}
            )  # fmt: skip
    return pd.DataFrame(out, columns=cols)


def heads_table(rows: pd.DataFrame, modalities: list[str]) -> pd.DataFrame:
    """Mean test macro-F1 of each per-modality head (and the fused head) per balancer,
    beside logistic regression on each modality alone: where did the imbalance go?"""
    ps = per_seed(rows)
    out = []
    for method in _methods(rows, "balancer"):
        sub = ps[ps["method"] == method]
        rec: dict[str, Any] = {"method": method}
        for m in modalities:
            rec[m] = float(sub[HEAD_PREFIX + m].mean())
        rec["fused"] = float(sub["macro_f1"].mean())
        out.append(rec)
    for clf in CLASSIC_METHODS:
        names = [f"{clf}:{m}" for m in modalities]
        if not all((ps["method"] == n).any() for n in names):
            continue
        rec = {"method": f"{clf} (one modality each)"}
        for m, n in zip(modalities, names, strict=True):
            rec[m] = float(ps.loc[ps["method"] == n, "macro_f1"].mean())
        concat = ps.loc[ps["method"] == f"{clf}:concat", "macro_f1"]
        rec["fused"] = float(concat.mean()) if len(concat) else np.nan
        out.append(rec)
    return pd.DataFrame(out, columns=["method", *modalities, "fused"])


def wide_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """method x metric cells 'mean ± sd [low, high]' for the markdown/HTML table."""

    def cell(r: pd.Series) -> str:
        if not np.isfinite(r["mean"]):
            return "–"
        s = f"{r['mean']:.3f}"
        if np.isfinite(r["sd"]):
            s += f" ± {r['sd']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        return s

    s = summary.assign(cell=summary.apply(cell, axis=1))
    wide = s.pivot(index="method", columns="metric", values="cell")
    wide = wide.reindex(index=summary["method"].drop_duplicates(), columns=list(METRICS))
    n = summary.groupby("method", sort=False)["n"].max()
    wide.insert(0, "seeds", n.reindex(wide.index).astype(int).astype(str))
    wide.columns = ["seeds"] + [METRIC_LABELS[m] for m in METRICS]
    return wide


def reference_table(name: str, summary: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Published rows, then this run's balancers and logistic-regression floors (means)."""
    ref = REFERENCES[name]
    table = pd.DataFrame(ref["rows"]).set_index("method")
    kinds = rows.drop_duplicates("method").set_index("method")["kind"]
    ours = summary[summary["metric"].isin(["accuracy", "macro_f1", "auroc"])]
    for method in ours["method"].drop_duplicates():
        if kinds[method] == "classic" and not method.startswith("logreg:"):
            continue
        m = ours[ours["method"] == method].set_index("metric")["mean"]
        table.loc[f"{method} (this run, mean)"] = {
            "accuracy": m.get("accuracy"), "f1": m.get("macro_f1"), "auroc": m.get("auroc"),
            "selection": "validation split" if kinds[method] == "balancer"
            else "CV inside training samples",
        }  # fmt: skip
    table = table.rename(columns={"f1": "F1 (ours: macro-F1)"})
    return table
