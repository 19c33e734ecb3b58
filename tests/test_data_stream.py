"""The streaming data path: dense, sparse (CSR) and backed (on-disk) inputs of the same values
give the same preprocessed features and the same trained model on the same seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from balmm.data.io import load_inputs, write_h5mu
from balmm.data.matrix import DiskMatrix
from balmm.data.preprocess import Preprocessor
from balmm.data.simulate import make_specs, simulate
from balmm.errors import InputError
from balmm.training.fit import train

FAST = dict(pretrain_epochs=4, pretrain_patience=0, kd_epochs=2, epochs=5, patience=0,
            n_boot=10, hidden=16, embed_dim=8, lr=0.01, folds=0)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    specs = make_specs(["rna", "adt", "noise"], n_features=[60, 12, 8], signal=[3.0, 2.0, 0.0],
                       shared=[0.5, 0.5, 0.0], n_informative=[15, 6, 2])  # fmt: skip
    specs["rna"].count_like = True
    sim = simulate(n_samples=150, n_classes=2, modalities=specs, missing_rate=0.1, seed=5)
    x = np.asarray(sim.mods["adt"].X).copy()
    x[np.random.default_rng(0).random(x.shape) < 0.05] = np.nan  # missing values too
    sim.mods["adt"].X = x
    folder = tmp_path_factory.mktemp("stream")
    dense = folder / "dense.h5mu"
    write_h5mu(sim, dense)
    for m in sim.mods.values():  # the same values stored as CSR (NaN as explicit entries)
        m.X = sp.csr_matrix(np.asarray(m.X))
    sparse = folder / "sparse.h5mu"
    write_h5mu(sim, sparse)
    return dense, sparse


def _variants(files):
    dense, sparse = files
    return {
        "dense": load_inputs([str(dense)]),
        "csr": load_inputs([str(sparse)]),
        "backed-dense": load_inputs([str(dense)], backed=True),
        "backed-csr": load_inputs([str(sparse)], backed=True),
    }


def test_dense_sparse_and_backed_inputs_give_identical_features(files, tmp_path):
    variants = _variants(files)
    assert sp.issparse(variants["csr"].mods["rna"].X)
    assert all(a.isbacked for a in variants["backed-csr"].mods.values())
    ref_data = variants["dense"]
    ids = ref_data.samples
    ref_pre = Preprocessor(max_features=25).fit(ref_data, ref_data.ids("train"))
    assert ref_pre.summary()["rna"]["is_count"]  # counts: normalised, log1p, HVG
    ref = ref_pre.transform(ref_data, ids)
    for name, data in variants.items():
        pre = Preprocessor(max_features=25).fit(data, data.ids("train"))
        assert pre.features == ref_pre.features, name
        for store in (None, tmp_path / name):
            if store is not None:
                store.mkdir()
            got = pre.transform(data, ids, store=store)
            for m in ref.X:
                np.testing.assert_array_equal(got.mask[m], ref.mask[m])
                if store is not None:
                    assert isinstance(got.X[m], DiskMatrix)
                    rows = np.array([7, 3, 3, 0, len(ids) - 1])  # any order, repeats
                    np.testing.assert_array_equal(got.X[m][rows], ref.X[m][rows])
                np.testing.assert_array_equal(np.asarray(got.X[m]), ref.X[m], err_msg=name)


def test_dense_and_backed_sparse_inputs_train_identical_models(files):
    variants = _variants(files)
    results = {k: train(variants[k], seed=0, **FAST) for k in ("dense", "backed-csr")}
    a, b = results["dense"], results["backed-csr"]
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.metrics["test"]["fused"] == b.metrics["test"]["fused"]
    assert a.metrics["test"]["fused"]["accuracy"] > 0.6  # it learnt the signal


def test_backed_file_with_an_unmeasured_row_is_refused(files, tmp_path):
    import anndata as ad

    x = np.ones((6, 3), dtype=np.float32)
    x[2] = np.nan
    a = ad.AnnData(x)
    a.obs_names = [f"s{i}" for i in range(6)]
    path = tmp_path / "m.h5ad"
    a.write_h5ad(path)
    with pytest.raises(InputError, match="only missing values"):
        load_inputs([f"m={path}"], require_labels=False, backed=True)


def test_gcn_refuses_more_samples_than_its_limit(monkeypatch):
    from balmm.model import graph

    specs = make_specs(["a", "b"], n_features=[6, 6], signal=[2.0, 1.0])
    sim = simulate(n_samples=40, n_classes=2, modalities=specs, seed=0)
    monkeypatch.setattr(graph, "GCN_MAX_SAMPLES", 30)
    with pytest.raises(InputError, match="gcn: 40 samples is above its limit of 30"):
        train(sim, encoder="gcn", **FAST)


def test_row_topk_keeps_the_k_largest_entries_of_each_row():
    from balmm.model.graph import _row_topk

    m = sp.random(300, 300, density=0.1, format="csr", random_state=1)
    got = _row_topk(m, 5)
    for i in range(m.shape[0]):
        row = m[i].toarray().ravel()
        want = np.sort(row[row > 0])[::-1][:5]
        have = np.sort(got[i].data)[::-1]
        np.testing.assert_array_equal(have, want)


def test_features_on_disk_are_read_in_batches_with_the_same_results(files, tmp_path):
    from balmm.model.fusion import MultiModalNet
    from balmm.training.tensors import RowSource, infer, split_from, unimodal_logits

    data = _variants(files)["backed-csr"]
    pre = Preprocessor(max_features=25).fit(data, data.ids("train"))
    proc_disk = pre.transform(data, data.samples, store=tmp_path)
    proc_mem = pre.transform(data, data.samples)
    idx = np.arange(len(data.samples))
    on_disk = split_from(proc_disk, idx, torch.device("cpu"))
    in_mem = split_from(proc_mem, idx, torch.device("cpu"))
    assert isinstance(on_disk.X["rna"], RowSource)
    torch.manual_seed(0)
    alone = MultiModalNet({"adt": len(pre.features["adt"])}, 2, encoder="linear")
    whole = unimodal_logits(alone, "adt", in_mem)
    torch.testing.assert_close(unimodal_logits(alone, "adt", on_disk, batch=16), whole)
    net = MultiModalNet({m: len(f) for m, f in pre.features.items()}, 2, encoder="linear")
    a, b = infer(net, on_disk, batch=16), infer(net, in_mem)
    for k in b:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6)


def test_sparse_columns_are_gathered_in_place_as_a_stack_of_the_chunks_would_be():
    from balmm.data import matrix

    rng = np.random.default_rng(0)
    x = sp.random(3000, 40, density=0.1, format="csr", random_state=1, dtype=np.float32)
    x.data[::7] = 0  # explicit zeros are kept, as a stack of the chunks keeps them
    rows = np.sort(rng.choice(3000, 2000, replace=False))
    cols = np.flatnonzero(rng.random(40) < 0.7)
    chunks = list(matrix.row_chunks(len(rows), 9000))  # chunks of 1864 rows
    assert len(chunks) > 1
    want = sp.vstack([x[rows[sl]][:, cols] for sl in chunks], format="csr").tocsc()
    got = matrix._gather_csc(x, rows, cols, chunks)
    for a in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got, a), getattr(want, a), err_msg=a)


def test_released_raw_values_keep_the_rows_asked_for_and_every_table(files):
    data = _variants(files)["dense"]
    pre = Preprocessor(max_features=25).fit(data, data.ids("train"))
    keep = data.ids("train")[::3]
    want = pre.transform(data, keep)
    presence = data.presence()
    data.release_values(keep)
    assert all(sp.issparse(a.X) for a in data.mods.values())
    for a in data.mods.values():
        assert np.diff(a.X.indptr)[~a.obs_names.isin(keep)].sum() == 0  # nothing else kept
    pd.testing.assert_frame_equal(data.presence(), presence)
    got = pre.transform(data, keep)
    for m in want.X:
        np.testing.assert_array_equal(got.X[m], want.X[m])
        np.testing.assert_array_equal(got.mask[m], want.mask[m])


def test_training_that_releases_the_raw_values_writes_the_same_outputs(files, tmp_path):
    dense = files[0]
    for name, release in (("kept", False), ("released", True)):
        data = load_inputs([str(dense)])
        train(data, seed=0, out=tmp_path / name, release_raw=release, **FAST)
        assert sp.issparse(data.mods["adt"].X) == release
    for f in ("predictions.csv", "markers.csv", "metrics.json", "embeddings.h5ad"):
        assert (tmp_path / "kept" / f).read_bytes() == (tmp_path / "released" / f).read_bytes(), f
    from balmm.predict import predict

    kept = predict(tmp_path / "kept", load_inputs([str(dense)]))
    data = load_inputs([str(dense)])
    pd.testing.assert_frame_equal(predict(tmp_path / "kept", data, release_raw=True), kept)
    assert all(a.X.nnz == 0 for a in data.mods.values())
