"""Stratified splits: the test split (when none is given) and the validation split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split


def stratified_split(
    ids: Sequence[str] | pd.Index,
    labels: Sequence | np.ndarray,
    test_size: float,
    seed: int,
) -> tuple[pd.Index, pd.Index]:
    """Split ``ids`` into (keep, held_out), stratified by ``labels`` when every class allows it.

    Falls back to an unstratified split when a class has a single member.
    """
    ids = pd.Index(ids)
    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 else None
    keep, held = train_test_split(
        np.arange(len(ids)), test_size=test_size, random_state=seed, stratify=stratify
    )
    return ids[np.sort(keep)], ids[np.sort(held)]


def stratified_subsample(n: int, labels: np.ndarray, n_max: int, seed: int) -> np.ndarray:
    """Sorted positions of a stratified random subsample of at most ``n_max`` of ``n``
    samples (all of them when ``n <= n_max``): probes need a few thousand, not millions."""
    if n <= n_max:
        return np.arange(n)
    keep, _ = train_test_split(np.arange(n), train_size=n_max, stratify=labels, random_state=seed)
    return np.sort(keep)
