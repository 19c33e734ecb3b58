"""Bar plot of a modality's top markers per class (the table of markers.csv)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from balmm.errors import InputError
from balmm.pl._common import modality_colors, new_axes, output_file

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _table(obj: Any) -> pd.DataFrame:
    if isinstance(obj, pd.DataFrame):
        return obj
    if isinstance(obj, (str, Path)):
        path = output_file(obj, "markers.csv", "markers.csv of a linear or mlp train run")
        return pd.read_csv(path)
    raise TypeError(f"expected a markers table or a path, not {type(obj).__name__}")


def markers(
    table: Any, modality: str | None = None, *, top: int = 8, ax: Axes | None = None
) -> Axes:
    """The ``top`` markers of each class in one modality (default: the first) as bars of
    their score, with their stability written beside each bar.

    ``table``: the DataFrame of ``balmm.tl.markers``, a markers.csv or a ``train --out``
    folder.
    """
    df = _table(table)
    modality = modality if modality is not None else str(df["modality"].iloc[0])
    sub = df[(df["modality"] == modality) & (df["rank"] <= top)]
    if sub.empty:
        raise InputError(f"no markers for modality {modality!r}")
    classes = list(dict.fromkeys(sub["class"].astype(str)))
    colors = modality_colors(classes)
    ax = new_axes(ax, (6.5, 0.28 * len(sub) + 1.2))
    labels, y = [], 0
    for c in classes:
        rows = sub[sub["class"].astype(str) == c].sort_values("rank")
        ypos = -np.arange(y, y + len(rows))
        ax.barh(ypos, rows["score"], color=colors[c], label=c, alpha=0.9)
        for yy, s, st in zip(ypos, rows["score"], rows["stability"], strict=True):
            ax.text(max(s, 0), yy, f" {st:.0%}", va="center", fontsize=7, color="#444")
        labels += list(zip(ypos, rows["feature"].astype(str), strict=True))
        y += len(rows) + 1
    ax.set_yticks([p for p, _ in labels], [f for _, f in labels], fontsize=7)
    ax.axvline(0, color="#222", lw=0.8)
    ax.set_xlabel("score (effect per sd on the class's centred logit); text: stability")
    ax.set_title(f"Top markers per class: {modality}")
    ax.legend(fontsize=8, loc="lower right")
    return ax
