"""What a benchmark runs: the :class:`BenchSpec`, its ordered list of :class:`Unit` s
``(seed, fold, method)``, the ``--shard I/N`` slice of them, the data each (seed, fold) sees,
and the manifest that identifies the benchmark across its shards.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from balmm import __version__
from balmm.bench.classic import CLASSIC_METHODS
from balmm.data.dataset import SPLIT, TEST, TRAIN, MultiOmicsData
from balmm.errors import InputError

BALANCERS = ("balmm", "none", "concat", "uncertainty", "ogm-ge")
CLASSIC = "classic"
HEAD_PREFIX = "head_f1:"
KEY_COLS = ["seed", "fold", "method"]
INT_COLS = ["seed", "fold", "n_train", "n_test"]


@dataclass(frozen=True)
class Unit:
    """One piece of work: one method (a balancer, or ``classic``) on one seed and fold."""

    seed: int
    fold: int
    method: str


@dataclass
class BenchSpec:
    """What a benchmark runs; identical across the shards of one benchmark.

    Attributes:
        balancers: balancer names passed to ``balmm.training.fit.train``.
        seeds: seed values (model initialisation, validation carve, CV shuffling).
        cv: number of folds of repeated stratified K-fold over all labelled samples,
            or None for the data's own train/test split.
        classic: classic floor names (see :data:`CLASSIC_METHODS`); empty = none.
        config: TrainConfig values given by the user (file and overrides), as a dict.
        device: device for training (``auto``, ``cpu``, ``cuda``).
        max_features: Preprocessor feature cap for the classic floors.
        reference: name of published reference numbers to show, or None.
    """

    balancers: list[str]
    seeds: list[int]
    cv: int | None = None
    classic: list[str] = field(default_factory=lambda: list(CLASSIC_METHODS))
    config: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    max_features: int = 2000
    reference: str | None = None

    def __post_init__(self) -> None:
        bad = [b for b in self.balancers if b not in BALANCERS]
        if bad:
            raise InputError(f"--balancers: unknown {bad}; known: {', '.join(BALANCERS)}")
        if len(set(self.balancers)) != len(self.balancers):
            raise InputError(f"--balancers: repeated names in {self.balancers}")
        bad = [c for c in self.classic if c not in CLASSIC_METHODS]
        if bad:
            raise InputError(f"--classic: unknown {bad}; known: {', '.join(CLASSIC_METHODS)}")
        if not self.seeds:
            raise InputError("--seeds must be >= 1")
        if self.cv is not None and self.cv < 2:
            raise InputError(f"--cv must be >= 2 folds, got {self.cv}")
        if not self.balancers and not self.classic:
            raise InputError("nothing to run: no balancers and no classic floors")
        if self.reference is not None:
            from balmm.bench.reference import REFERENCES

            if self.reference not in REFERENCES:
                raise InputError(
                    f"--reference: unknown {self.reference!r}; known: {', '.join(REFERENCES)}"
                )

    @property
    def folds(self) -> list[int]:
        return list(range(self.cv)) if self.cv else [0]

    def methods(self) -> list[str]:
        return list(self.balancers) + ([CLASSIC] if self.classic else [])

    def units(self) -> list[Unit]:
        return [Unit(s, f, m) for s in self.seeds for f in self.folds for m in self.methods()]


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) -> (I, N); None -> (1, 1)."""
    if text is None:
        return 1, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise InputError(f"--shard must look like I/N (e.g. 3/10), got {text!r}") from exc
    if not 1 <= i <= n:
        raise InputError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def shard_units(units: list[Unit], shard: tuple[int, int]) -> list[Unit]:
    """Round-robin slice, so every shard gets a similar mix of cheap and costly units."""
    i, n = shard
    return units[i - 1 :: n]


def data_fingerprint(data: MultiOmicsData) -> str:
    """Hash of sample IDs, labels, split and modality shapes: shards must share it."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(data.obs[["label", SPLIT]].astype(str)).values.tobytes())
    h.update(",".join(map(str, data.obs.index)).encode())
    for name, m in data.mods.items():
        h.update(f"{name}:{m.shape}".encode())
    return h.hexdigest()[:16]


def fold_split(data: MultiOmicsData, spec: BenchSpec, seed: int, fold: int) -> MultiOmicsData:
    """The data of one (seed, fold): the given split, or CV fold ``fold`` of repeat ``seed``."""
    return cv_fold(data, spec.cv, seed, fold) if spec.cv else data


def cv_fold(data: MultiOmicsData, n_splits: int, seed: int, fold: int) -> MultiOmicsData:
    """The labelled samples with fold ``fold`` of a stratified ``n_splits``-fold CV
    (shuffled with ``seed``) as the test split and the other folds as training."""
    from sklearn.model_selection import StratifiedKFold

    ids = data.ids(labelled=True)
    y = data.y(ids)
    _, counts = np.unique(y, return_counts=True)
    if counts.min() < n_splits:
        raise InputError(
            f"--cv {n_splits}: the smallest class has only {counts.min()} labelled samples"
        )
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, test_idx = list(skf.split(np.zeros(len(y)), y))[fold]
    d = data.subset(ids)
    d.obs[SPLIT] = TRAIN
    d.obs.iloc[test_idx, d.obs.columns.get_loc(SPLIT)] = TEST
    d.split_source = f"stratified {n_splits}-fold CV, repeat seed {seed}, fold {fold + 1}"
    return d


def make_manifest(
    data: MultiOmicsData, spec: BenchSpec, shard: tuple[int, int], units: list[Unit]
) -> dict[str, Any]:
    return {
        "balmm_version": __version__,
        "spec": asdict(spec),
        "data": {
            "source": data.source,
            "split_source": data.split_source,
            "label_key": data.label_key,
            "label_mapping": {str(k): str(v) for k, v in data.label_mapping.items()},
            "n_samples": int(len(data.obs)),
            "n_labelled": int(len(data.ids(labelled=True))),
            "n_train": int(len(data.ids(TRAIN))),
            "n_test": int(len(data.ids(TEST))),
            "classes": data.classes,
            "modalities": {n: [int(m.n_obs), int(m.n_vars)] for n, m in data.mods.items()},
            "fingerprint": data_fingerprint(data),
        },
        "units_total": len(spec.units()),
        "shard": list(shard),
        "units": [[u.seed, u.fold, u.method] for u in units],
    }
