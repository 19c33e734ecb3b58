"""embeddings.h5ad and the evaluation are computed a block of rows at a time (a million
samples' embeddings never sit in memory): the same file as the whole AnnData written at once,
with in-memory, backed and block-by-block runs giving the same outputs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from balmm.data.io import load_inputs, write_h5mu
from balmm.data.simulate import make_specs, simulate
from balmm.predict import predict_result
from balmm.training import embeddings as emb_mod
from balmm.training.fit import train

FAST = dict(pretrain_epochs=3, pretrain_patience=0, kd_epochs=2, epochs=3, patience=0,
            n_boot=10, hidden=16, embed_dim=8, lr=0.01, folds=0)  # fmt: skip


@pytest.fixture(scope="module")
def h5mu(tmp_path_factory):
    specs = make_specs(["rna", "adt"], n_features=[30, 10], signal=[3.0, 2.5])
    sim = simulate(n_samples=90, n_classes=3, modalities=specs, missing_rate=0.15, seed=2)
    path = tmp_path_factory.mktemp("blocks") / "d.h5mu"
    write_h5mu(sim, path)
    return path


def _same(a: ad.AnnData, b: ad.AnnData, exact: bool = True) -> None:
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    if exact:
        np.testing.assert_array_equal(a.X, b.X)
    else:
        np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-6)
    assert sorted(a.obsm) == sorted(b.obsm)
    for k in a.obsm:
        if exact:
            np.testing.assert_array_equal(a.obsm[k], b.obsm[k], err_msg=k)
        else:  # other batch shapes: matmul sums may differ in the last bit
            np.testing.assert_allclose(a.obsm[k], b.obsm[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert a.uns.get("balmm") == b.uns.get("balmm")


def test_block_writer_matches_the_whole_anndata_written_at_once(h5mu, tmp_path):
    res = train(load_inputs([str(h5mu)]), seed=0, **FAST)
    src = res.embedding_source
    whole = res.embeddings  # built in memory from the same source
    assert whole.n_obs == 90 and whole.obsm["X_fused"].shape[1] == 16
    # the missing modality's embedding is zero in the fused one
    lacks = ~res.embedding_source.sets["fit"].M["adt"].numpy()
    assert lacks.any() and not whole.obsm["X_fused"][: len(lacks)][lacks, 8:].any()
    with ad.settings.override(allow_write_nullable_strings=True):
        whole.write_h5ad(tmp_path / "at_once.h5ad")
    one = emb_mod.write_h5ad(src, tmp_path / "one_block.h5ad")
    # one block: the very bytes anndata writes for the same object
    assert one.read_bytes() == (tmp_path / "at_once.h5ad").read_bytes()
    # blocks of 7 rows, in a shuffled order: a real AnnData file with the same content
    order = np.random.default_rng(0).permutation(src.n_obs)
    blocks = emb_mod.write_h5ad(src.reordered(order), tmp_path / "blocks.h5ad", rows=7)
    _same(ad.read_h5ad(blocks), whole[order].copy(), exact=False)


def test_backed_train_and_predict_write_the_outputs_of_an_in_memory_run(
    h5mu, tmp_path, monkeypatch
):
    monkeypatch.setattr(emb_mod, "BLOCK_ROWS", 16)  # several blocks even on 90 samples
    runs = {}
    for mode, backed in (("mem", False), ("disk", True)):
        data = load_inputs([str(h5mu)], backed=backed)
        res = train(data, seed=0, out=tmp_path / mode, **FAST)
        pred = predict_result(tmp_path / mode, load_inputs([str(h5mu)], backed=backed),
                              out=tmp_path / f"pred_{mode}")  # fmt: skip
        runs[mode] = (res, pred)
    for folder in ("{}", "pred_{}"):
        a = ad.read_h5ad(tmp_path / folder.format("mem") / "embeddings.h5ad")
        b = ad.read_h5ad(tmp_path / folder.format("disk") / "embeddings.h5ad")
        # the same model (tests/test_data_stream.py); in-memory features are views into a
        # larger array, so a matmul may round differently in the last bit
        _same(a, b, exact=False)
        pa = pd.read_csv(tmp_path / folder.format("mem") / "predictions.csv")
        pb = pd.read_csv(tmp_path / folder.format("disk") / "predictions.csv")
        pd.testing.assert_frame_equal(pa, pb, rtol=1e-5, atol=1e-6)
    # every file in input order
    ids = list(ad.read_h5ad(tmp_path / "mem" / "embeddings.h5ad").obs_names)
    assert ids == list(pd.read_csv(tmp_path / "mem" / "pairing.csv")["sample"])
    # after a backed run the features on disk are gone: the result reads the written file
    res, pred = runs["disk"]
    assert res.embedding_source is None and pred.embedding_source is None
    assert sorted(res.embeddings.obs_names) == sorted(ids)
    assert list(pred.embeddings.obs_names) == list(pred.predictions["sample"])
