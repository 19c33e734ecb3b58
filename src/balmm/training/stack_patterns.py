"""Missingness-pattern stackers (``stack_missing = "pattern"``).

The zero-fill stacker (:mod:`balmm.training.stacking`) is one linear model for every
sample: an absent assay's features are 0 plus a presence flag. Its coefficients for the
assays a sample has were fitted mostly on rows that also had the absent one, so they are
conditional on it and under-weight what remains when it is missing.

A pattern stacker predicts the rows of one missingness pattern P (the set of assays a
sample has: known from the data, never from labels) with a :class:`Stacker` fitted on the
training rows that have every assay of P, on P's assays' logits only (``C`` again by
inner CV on log-loss). The stacker's training rows (OOF logits, presence, labels) travel
with the model (``stack.safetensors`` in bundles), and a pattern's stacker is fitted the
first time a sample with that pattern is predicted. The fit is deterministic, so
``balmm predict`` gives what training-time evaluation gives, also for a pattern that no
training or test sample had.

A pattern keeps the zero-fill stacker (``pattern_info`` says why) when it has

* every assay and every training row has every assay: then the two are the same model
  (the presence flags are constant), so data without missing assays cost nothing;
* no assay: the zero-fill stacker's intercept (the training class balance);
* fewer than :data:`MIN_ROWS` training rows, or lacks a class of the training rows among
  them: too little to fit on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from balmm.training.stacking import Stacker

logger = logging.getLogger("balmm")

MIN_ROWS = 20


def make_source(
    assays: list[str],
    logits: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray],
    y: np.ndarray,
    seed: int,
    cv: int,
) -> dict[str, Any]:
    """The stacker's training rows in the form a model keeps them: ``logits`` (n, A, C)
    float32 (0 where absent), ``present`` (n, A) bool, ``y`` (n,) int64."""
    return {
        "assays": list(assays),
        "logits": np.stack([np.asarray(logits[a], dtype=np.float32) for a in assays], 1),
        "present": np.stack([np.asarray(present[a], dtype=bool) for a in assays], 1),
        "y": np.asarray(y, dtype=np.int64),
        "seed": int(seed),
        "cv": int(cv),
    }


def fit_pattern(source: Mapping[str, Any], key: tuple[bool, ...]) -> tuple[Stacker | None, dict]:
    """The stacker of the rows whose presence flags over ``source["assays"]`` are ``key``,
    or ``None`` (use the zero-fill stacker), with a description for reports."""
    assays = [a for a, on in zip(source["assays"], key, strict=True) if on]
    present, y = source["present"], source["y"]
    rows = np.flatnonzero(present[:, list(key)].all(1)) if assays else np.arange(len(y))
    info: dict[str, Any] = {"assays": ";".join(assays), "n_train": len(rows)}
    why = None
    if not assays:
        why = "no assay: the zero-fill stacker's intercept"
    elif all(key) and present.all():
        why = "every training row has every assay: the zero-fill stacker is this model"
    elif len(rows) < MIN_ROWS:
        why = f"fewer than {MIN_ROWS} training rows have these assays"
    elif missing := sorted(set(np.unique(y).tolist()) - set(np.unique(y[rows]).tolist())):
        why = f"no training row with these assays has class code(s) {missing}"
    if why is not None:
        return None, {**info, "stacker": "zero-fill", "why": why}
    cols = [j for j, on in enumerate(key) if on]
    logits = {source["assays"][j]: source["logits"][rows, j] for j in cols}
    st = Stacker(cv=source["cv"], seed=source["seed"]).fit(logits, None, y[rows])
    return st, {**info, "stacker": "pattern", "C": st.C_}


def prepare(stack: Any, masks: Mapping[str, torch.Tensor]) -> None:
    """Fit the stacker of every missingness pattern in ``masks`` (modality -> presence)
    that ``stack`` (a ``StackedFusion`` with a ``source``) has not fitted yet."""
    src = stack.source
    pres = np.stack([masks[a].detach().cpu().numpy().astype(bool) for a in src["assays"]], 1)
    if not len(pres):
        return
    for key in map(tuple, np.unique(pres, axis=0).tolist()):
        if key in stack.patterns:
            continue
        st, info = fit_pattern(src, key)
        stack.set_pattern(key, None if st is None else st.to_dict())
        stack.pattern_info[key] = info
        if st is None and info["why"].startswith(("fewer", "no training row")):
            logger.info("stacker for samples with %s: %s; the zero-fill stacker predicts them",
                        info["assays"] or "no assay", info["why"])  # fmt: skip


def pattern_report(stack: Any) -> list[dict[str, Any]]:
    """The patterns predicted so far, most assays first (for metrics.json)."""
    keys = sorted(stack.pattern_info, key=lambda k: (-sum(k), [not v for v in k]))
    return [stack.pattern_info[k] for k in keys]
