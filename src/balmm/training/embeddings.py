"""The per-sample embeddings of a trained model (``embeddings.h5ad``), computed a block of
rows at a time.

At 10^6 samples the encoders' embeddings take several GB (64 floats per modality per sample,
and the fused embedding again), more than everything else a run keeps. So a run keeps only
the class probabilities (samples x classes) and an :class:`EmbeddingSource`, which computes
the embeddings of any rows on demand: :func:`write_h5ad` writes them in row blocks into a
real AnnData file (``anndata.read_h5ad`` reads it), and :meth:`EmbeddingSource.anndata`
builds the AnnData in memory for Python users (``result.embeddings``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from balmm.model.fusion import CONCAT
from balmm.training.tensors import Split, forward

# rows computed and written at a time (a block's embeddings: 8192 x 256 floats, 8 MB)
BLOCK_ROWS = 8192


class EmbeddingSource:
    """Everything embeddings.h5ad holds except the embeddings themselves, which are computed
    from ``model`` and the splits ``sets[name]`` (for each of ``names``, in that order) when
    asked for. ``fused_proba[name]``: the fused class probabilities of that split's samples.
    Rows are listed in :attr:`order` (positions in the splits' concatenation)."""

    def __init__(
        self,
        model: Any,
        sets: dict[str, Split],
        names: Sequence[str],
        classes: list[str],
        fused_proba: dict[str, np.ndarray],
        split_labels: dict[str, str] | None = None,
    ) -> None:
        self.model, self.sets, self.names, self.classes = model, sets, list(names), classes
        self.split_labels = split_labels or {n: ("train" if n == "fit" else n) for n in names}
        sizes = [len(sets[n]) for n in self.names]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.fused = np.concatenate([fused_proba[n] for n in self.names]).astype(np.float32)
        self.order = np.arange(int(self.offsets[-1]))
        self.uns: dict[str, Any] = {}

    @property
    def n_obs(self) -> int:
        return len(self.order)

    def ids(self) -> np.ndarray:
        """Sample IDs in the splits' concatenation order (before :attr:`order`)."""
        return np.concatenate([self.sets[n].ids.astype(str).to_numpy() for n in self.names])

    def reordered(self, positions: np.ndarray) -> EmbeddingSource:
        """The same rows listed in the order ``positions`` (positions in the current order)."""
        other = copy.copy(self)
        other.order = self.order[np.asarray(positions, dtype=np.int64)]
        return other

    def obs(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        """``.obs`` (label, split, predicted class) of the output rows ``rows`` (all)."""
        pos = self.order if rows is None else self.order[rows]
        split_of = np.searchsorted(self.offsets, pos, side="right") - 1
        y = np.concatenate([self.sets[n].y.cpu().numpy() for n in self.names])[pos]
        splits = np.array([self.split_labels[n] for n in self.names], dtype=object)[split_of]
        classes = np.array(self.classes, dtype=object)
        label = np.where(y >= 0, classes[np.maximum(y, 0)], None)
        # categories as the in-memory AnnData had them before subsetting: the split names
        # present, sorted; every class for label and predicted
        split_cats = sorted({self.split_labels[n] for n, k in zip(self.names, np.diff(
            self.offsets), strict=True) if k})  # fmt: skip
        obs = pd.DataFrame(
            {
                "label": pd.Categorical(label, categories=self.classes),
                "split": pd.Categorical(splits, categories=split_cats),
                "predicted": pd.Categorical(
                    classes[self.fused[pos].argmax(1)], categories=self.classes
                ),
            },
            # object dtype: pandas 3 would infer a nullable string dtype, which anndata 0.12
            # refuses to write by default
            index=pd.Index(self.ids()[pos], dtype=object, name="sample"),
        )
        return obs

    def var(self) -> pd.DataFrame:
        return pd.DataFrame(index=pd.Index([f"proba_{c}" for c in self.classes], name="class"))

    @torch.no_grad()
    def block(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``.obsm`` of the output rows ``rows``: ``X_<modality>`` (``X_concat`` for early
        fusion) and ``X_fused`` (the embeddings of the modalities in the fusion, each zero
        where the sample lacks it), float32."""
        pos = self.order[np.asarray(rows, dtype=np.int64)]
        split_of = np.searchsorted(self.offsets, pos, side="right") - 1
        self.model.eval()
        z: dict[str, np.ndarray] = {}
        mask: dict[str, np.ndarray] = {}
        for i, name in enumerate(self.names):
            sel = np.flatnonzero(split_of == i)
            if not len(sel):
                continue
            # each split's rows in increasing order: the same batches as a pass over the
            # split when the block holds all of it
            local = pos[sel] - self.offsets[i]
            srt = np.argsort(local, kind="stable")
            sel, local = sel[srt], local[srt]
            s = self.sets[name]
            for m, v in _embed(self.model, s, local).items():
                if m not in z:
                    z[m] = np.empty((len(pos), v.shape[1]), dtype=np.float32)
                z[m][sel] = v
            for m, mk in s.M.items():
                mask.setdefault(m, np.zeros(len(pos), dtype=bool))[sel] = mk.cpu().numpy()[local]
        obsm = {"X_" + ("concat" if m == CONCAT else m): v for m, v in z.items()}
        if self.model.early_fusion:
            fused = obsm["X_concat"]
        else:
            mods = list(z)
            fused = np.concatenate(
                [z[m] * mask[m][:, None] for m in mods if m not in self.model.fusion_off]
                or [z[mods[0]] * 0],
                axis=1,
            )
        obsm["X_fused"] = fused.astype(np.float32)
        return obsm

    def blocks(self, rows: int = BLOCK_ROWS) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        """(output rows, their ``.obsm``) in consecutive blocks of ``rows``."""
        for start in range(0, self.n_obs, rows):
            sl = slice(start, min(start + rows, self.n_obs))
            yield sl, self.block(np.arange(sl.start, sl.stop))

    def anndata(self, rows: np.ndarray | None = None) -> Any:
        """The output rows ``rows`` (all) as an in-memory AnnData: class probabilities in
        ``.X``, the embeddings in ``.obsm``."""
        import anndata as ad

        idx = np.arange(self.n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
        adata = ad.AnnData(
            X=self.fused[self.order[idx]],
            obs=self.obs(idx),
            var=self.var(),
            obsm=self.block(idx) if len(idx) else {},
        )
        adata.uns.update(self.uns)
        return adata


class LazyEmbeddings:
    """For a result holding ``embedding_source`` (an :class:`EmbeddingSource` or None),
    ``out`` (its output folder or None) and ``_embeddings``: the ``embeddings`` AnnData,
    built in memory on first access, or read from ``out``'s embeddings.h5ad where it was
    computed from features on disk that are gone."""

    embedding_source: EmbeddingSource | None
    out: Path | None
    _embeddings: Any

    @property
    def embeddings(self) -> Any:
        if self._embeddings is None and self.embedding_source is not None:
            self._embeddings = self.embedding_source.anndata()
        elif self._embeddings is None and self.out is not None:
            import anndata as ad

            self._embeddings = ad.read_h5ad(Path(self.out) / "embeddings.h5ad")
        return self._embeddings

    @embeddings.setter
    def embeddings(self, value: Any) -> None:
        self._embeddings = value

    def drop_source(self, written: bool) -> None:
        """Before the features on disk (``--backed``) go: build the embeddings in memory now
        unless they were ``written`` to embeddings.h5ad, then forget the source."""
        if not written:
            self.embeddings  # noqa: B018
        self.embedding_source = None


def _embed(model: Any, s: Split, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Embeddings of the rows ``rows`` of ``s``, per modality (gcn: the split's whole graph
    is run and those rows kept)."""
    if s.adj is not None:
        out = forward(model, s)["z"]
        return {m: v[torch.as_tensor(rows)].cpu().numpy() for m, v in out.items()}
    res: dict[str, list[np.ndarray]] = {}
    for a in range(0, len(rows), BLOCK_ROWS):
        r = torch.as_tensor(rows[a : a + BLOCK_ROWS], device=s.y.device)
        for m, v in forward(model, s, r)["z"].items():
            res.setdefault(m, []).append(v.cpu().numpy())
    return {m: np.concatenate(v) for m, v in res.items()}


def write_h5ad(src: EmbeddingSource, path: str | Path, rows: int = BLOCK_ROWS) -> Path:
    """Write ``src`` to ``path`` as AnnData's h5ad layout, the embeddings a block of
    ``rows`` rows at a time (the file has the bytes ``AnnData.write_h5ad`` writes for the
    same object: the same elements, created in the same order)."""
    import anndata as ad
    import h5py
    from anndata.io import write_elem

    path = Path(path)
    blocks = src.blocks(rows)
    first = next(blocks, None)
    with ad.settings.override(allow_write_nullable_strings=True), h5py.File(path, "w") as f:
        f.attrs.setdefault("encoding-type", "anndata")
        f.attrs.setdefault("encoding-version", "0.1.0")
        write_elem(f, "X", src.fused[src.order])
        write_elem(f, "obs", src.obs())
        write_elem(f, "var", src.var())
        obsm = f.require_group("obsm")
        if first is not None:
            sl, arrays = first
            for key, v in arrays.items():
                ds = obsm.create_dataset(key, shape=(src.n_obs, v.shape[1]), dtype=v.dtype)
                ds[sl] = v
                ds.attrs.setdefault("encoding-type", "array")
                ds.attrs.setdefault("encoding-version", "0.2.0")
        obsm.attrs.setdefault("encoding-type", "dict")
        obsm.attrs.setdefault("encoding-version", "0.1.0")
        for key in ("varm", "obsp", "varp", "layers"):
            write_elem(f, key, {})
        write_elem(f, "uns", dict(src.uns))
        for sl, arrays in blocks:
            for key, v in arrays.items():
                obsm[key][sl] = v
    return path
