"""Generic plots the specific ones are made of: bars with intervals and annotated heatmaps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from balmm.pl._common import new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def bars_with_ci(
    labels: Sequence[str],
    values: Sequence[float | None],
    cis: Sequence[tuple[float | None, float | None]] | None = None,
    *,
    xlabel: str = "",
    title: str = "",
    refline: float | None = None,
    refline_label: str = "",
    colors: Sequence[str] | str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Horizontal bars (first label on top) with optional interval whiskers and a reference line."""
    n = len(labels)
    ax = new_axes(ax, (6.5, 0.45 * n + 1.2))
    ypos = np.arange(n)[::-1]
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    ax.barh(ypos, vals, color=colors or "#4a6fd1", alpha=0.85)
    if cis is not None:
        lo = np.array([np.nan if c[0] is None else c[0] for c in cis], dtype=float)
        hi = np.array([np.nan if c[1] is None else c[1] for c in cis], dtype=float)
        err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
        ax.errorbar(vals, ypos, xerr=err, fmt="none", ecolor="#222", capsize=3, lw=1)
    if refline is not None:
        ax.axvline(refline, color="#c0392b", ls="--", lw=1, label=refline_label or None)
        if refline_label:
            ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(ypos, labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return ax


def heatmap_size(df: pd.DataFrame) -> tuple[float, float]:
    """A figure size that fits ``heatmap(df)`` with readable cells."""
    return max(4.0, 0.8 * df.shape[1] + 2.2), max(3.0, 0.55 * df.shape[0] + 1.5)


def heatmap(
    df: pd.DataFrame,
    *,
    title: str = "",
    cbar_label: str = "",
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    xlabel: str = "",
    ylabel: str = "",
    dark_low: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Annotated heatmap of a DataFrame (NaN cells left blank), with a colour bar.
    ``dark_low``: the colour map is dark at its low end (viridis, magma; not Blues), which
    decides where the annotations are written in white."""
    arr = df.to_numpy(dtype=float)
    ax = new_axes(ax, heatmap_size(df))
    im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(arr.shape[1]), [str(c) for c in df.columns], rotation=40, ha="right")
    ax.set_yticks(range(arr.shape[0]), [str(i) for i in df.index])
    finite = arr[np.isfinite(arr)]
    lo = finite.min() if vmin is None and finite.size else (vmin or 0)
    hi = finite.max() if vmax is None and finite.size else (vmax if vmax is not None else 1)
    mid = (lo + hi) / 2
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            if math.isfinite(arr[i, j]):
                ax.text(
                    j,
                    i,
                    fmt.format(arr[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if (arr[i, j] < mid) == dark_low else "black",
                )
    ax.figure.colorbar(im, ax=ax, label=cbar_label, shrink=0.8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax
