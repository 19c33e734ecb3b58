"""The in-memory container every step after reading works on.

A :class:`MultiOmicsData` holds one AnnData per modality (rows = the samples
that have that modality, so partial pairing is explicit) plus one sample table
``obs`` over the union of all samples with the label and the train/test split.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

LABEL = "label"
SPLIT = "split"
TRAIN = "train"
TEST = "test"


@dataclass
class MultiOmicsData:
    """Paired omics modalities with labels and split.

    Attributes:
        mods: modality name -> AnnData. ``obs_names`` are sample IDs (only the
            samples measured in that modality), ``var_names`` feature names,
            ``X`` float32, dense or scipy sparse; NaN marks a missing value.
        obs: one row per sample (union over modalities, stable order), index
            named ``sample``. Column ``label`` holds the class as a string (NaN
            when unknown); column ``split`` holds ``train`` or ``test``.
        label_key: the column or file the labels came from (for reports).
        label_mapping: class string -> original label value as text.
        split_source: how the split was obtained, e.g. ``given (MOGONET layout)``
            or ``carved (stratified, test_size=0.3, seed=0)``.
        source: human-readable description of the input.
        notes: warnings gathered while reading (dropped samples etc.).
        uns: free-form metadata carried to and from ``.h5mu`` ``.uns`` (e.g. the
            ground truth written by ``balmm simulate``).
    """

    mods: dict[str, ad.AnnData]
    obs: pd.DataFrame
    label_key: str | None = None
    label_mapping: dict[str, str] = field(default_factory=dict)
    split_source: str = ""
    source: str = ""
    notes: list[str] = field(default_factory=list)
    uns: dict = field(default_factory=dict)

    @property
    def modality_names(self) -> list[str]:
        return list(self.mods)

    @property
    def samples(self) -> pd.Index:
        return self.obs.index

    @property
    def classes(self) -> list[str]:
        """Sorted class names (the integer code of a class is its position here)."""
        if LABEL not in self.obs:
            return []
        return sorted(self.obs[LABEL].dropna().astype(str).unique().tolist())

    def y(
        self, ids: Sequence[str] | pd.Index | None = None, classes: Sequence[str] | None = None
    ) -> np.ndarray:
        """Integer class codes for ``ids`` (all samples by default); -1 where unlabelled.

        ``classes`` (default :attr:`classes`) fixes the code order, e.g. a fitted model's
        classes; a label not among them is -1 too.
        """
        labels = self.obs[LABEL] if ids is None else self.obs.loc[list(ids), LABEL]
        codes = {c: i for i, c in enumerate(self.classes if classes is None else classes)}
        return np.array(
            [codes.get(str(v), -1) if pd.notna(v) else -1 for v in labels], dtype=np.int64
        )

    def ids(self, split: str | None = None, labelled: bool = True) -> pd.Index:
        """Sample IDs of one split (``train``/``test``), optionally only labelled ones."""
        keep = np.ones(len(self.obs), dtype=bool)
        if split is not None:
            keep &= (self.obs[SPLIT] == split).to_numpy()
        if labelled and LABEL in self.obs:
            keep &= self.obs[LABEL].notna().to_numpy()
        return self.obs.index[keep]

    def presence(self) -> pd.DataFrame:
        """Boolean table samples x modalities: is the modality measured for the sample."""
        return pd.DataFrame(
            {name: self.obs.index.isin(m.obs_names) for name, m in self.mods.items()},
            index=self.obs.index,
        )

    def release_values(
        self, keep: Sequence[str] | pd.Index, names: Sequence[str] | None = None
    ) -> None:
        """Free the in-memory matrices' values except the rows of the samples ``keep``:
        each such modality's ``X`` becomes a CSR matrix holding only those rows (the others
        empty), its samples, features and every table unchanged. For a caller done with the
        raw values (``balmm train`` once they are preprocessed); on-disk (backed) ones stay.
        ``names``: only these modalities (default: all)."""
        import scipy.sparse as sp

        for name, a in self.mods.items():
            if a.isbacked or (names is not None and name not in names):
                continue
            rows = np.flatnonzero(a.obs_names.isin(pd.Index(keep)))
            # dense rows to CSR keep their NaN (missing) entries; the values are unchanged
            kept = sp.csr_matrix(a.X[rows], dtype=np.float32)
            per_row = np.zeros(a.n_obs, dtype=np.int64)
            per_row[rows] = np.diff(kept.indptr)
            indptr = np.concatenate([[0], np.cumsum(per_row)])
            a.X = sp.csr_matrix((kept.data, kept.indices, indptr), shape=a.shape)
        # the old values can sit in reference cycles (anndata's objects refer to each other)
        # that only the cyclic collector frees: at 100k samples they stayed until stage 1
        # (0.4 GB), at 1M they raised the run's peak by 2.4 GB
        gc.collect()

    def subset(self, ids: Sequence[str] | pd.Index) -> MultiOmicsData:
        """A copy restricted to ``ids`` (modalities keep only the samples they have)."""
        ids = pd.Index(ids)
        mods = {n: m[m.obs_names.isin(ids)].copy() for n, m in self.mods.items()}
        return MultiOmicsData(
            mods=mods,
            obs=self.obs.loc[ids].copy(),
            label_key=self.label_key,
            label_mapping=dict(self.label_mapping),
            split_source=self.split_source,
            source=self.source,
            notes=list(self.notes),
            uns=dict(self.uns),
        )
