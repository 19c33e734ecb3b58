"""Plots, scanpy-style: every function returns the matplotlib Axes it drew on and takes an
optional ``ax=``. The HTML reports of ``balmm profile`` and ``balmm train`` are drawn with
these same functions.

=====================  =======================================================
training run           :func:`loss_weights`, :func:`validation_f1`, :func:`imbalance`,
                       :func:`contributions`, :func:`confusion_matrix`, :func:`roc`,
                       :func:`embedding` (UMAP via scanpy), :func:`markers`
profile                :func:`unimodal_strength`, :func:`mi_heatmap`, :func:`kd_plan`,
                       :func:`shapley`, :func:`per_class_f1`
=====================  =======================================================
"""

from __future__ import annotations

from balmm.pl.embedding import embedding
from balmm.pl.markers import markers
from balmm.pl.profile import kd_plan, mi_heatmap, per_class_f1, shapley, unimodal_strength
from balmm.pl.train import (
    confusion_matrix,
    contributions,
    imbalance,
    loss_weights,
    roc,
    validation_f1,
)

__all__ = [
    "confusion_matrix",
    "contributions",
    "embedding",
    "imbalance",
    "kd_plan",
    "loss_weights",
    "markers",
    "mi_heatmap",
    "per_class_f1",
    "roc",
    "shapley",
    "unimodal_strength",
    "validation_f1",
]
