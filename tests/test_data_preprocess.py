"""Preprocessing: statistics from training samples only, counts, selection, save/load."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from balmm.data.dataset import MultiOmicsData
from balmm.data.preprocess import Preprocessor, is_count_like


def _data(mods: dict[str, np.ndarray], n_train: int, labels=None) -> MultiOmicsData:
    n = next(iter(mods.values())).shape[0]
    ids = pd.Index([f"s{i:03d}" for i in range(n)], name="sample")
    adatas = {}
    for name, x in mods.items():
        a = ad.AnnData(x)
        a.obs_names = ids
        a.var_names = [f"{name}_{j}" for j in range(x.shape[1])]
        adatas[name] = a
    lab = labels if labels is not None else np.array(["a", "b"])[np.arange(n) % 2]
    obs = pd.DataFrame(
        {"label": lab, "split": ["train"] * n_train + ["test"] * (n - n_train)}, index=ids
    )
    return MultiOmicsData(mods=adatas, obs=obs)


def test_statistics_come_from_training_samples_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    x[40:] += 100.0  # test rows shifted far away: any leak moves the train statistics
    x[5, 2] = np.nan
    d = _data({"m": x}, n_train=40)
    tr, te = d.ids("train"), d.ids("test")
    pre = Preprocessor(max_features=None, clip=None).fit(d, tr)
    out_tr = pre.transform(d, tr).X["m"]
    # Exactly zero mean / unit sd on train: the scaler saw only the 40 training rows.
    np.testing.assert_allclose(out_tr.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out_tr.std(0), 1, atol=1e-4)
    # The test rows keep their shift (about +100 / train sd), so nothing was refitted on them.
    assert pre.transform(d, te).X["m"].mean() > 50
    # Changing only the test rows changes nothing in the fitted state.
    x2 = x.copy()
    x2[40:] = rng.normal(size=(20, 8)) * 1e3
    pre2 = Preprocessor(max_features=None, clip=None).fit(_data({"m": x2}, 40), tr)
    np.testing.assert_array_equal(pre2.transform(d, tr).X["m"], out_tr)
    # The imputed value is the training median of that feature.
    med = np.nanmedian(x[:40, 2])
    filled = np.where(np.isnan(x[:40, 2]), med, x[:40, 2]).astype(np.float64)
    expect = (med - filled.mean()) / filled.std()
    assert out_tr[5, 2] == pytest.approx(expect, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_imputation_medians_are_scikit_learns(seed):
    # the training medians equal scikit-learn SimpleImputer's, bit for bit: gaps, ties
    # (values rounded to 0.1) and even and odd observed counts per column
    from sklearn.impute import SimpleImputer

    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(90, 12)), 1).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:60, 0] = np.nan
    x[0, 0], x[1, 0] = 2.5, -1.0  # a column with two observed training values
    d = _data({"m": x}, n_train=60)
    pre = Preprocessor(max_features=None, clip=None).fit(d, d.ids("train"))
    expect = SimpleImputer(strategy="median").fit(x[:60]).statistics_
    np.testing.assert_array_equal(pre._mods["m"].median, expect)


def test_feature_selection_uses_training_variance_only():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    x[:30, 4] *= 10  # high variance in train
    x[30:, 0] *= 1000  # huge variance only in test: must not be selected
    d = _data({"m": x}, n_train=30)
    pre = Preprocessor(max_features=1).fit(d, d.ids("train"))
    assert pre.features == {"m": ["m_4"]}


def test_constant_and_missing_features_dropped_and_clipping():
    x = np.random.default_rng(2).normal(size=(20, 5)).astype(np.float32)
    x[:, 1] = 3.0
    x[:14, 3] = np.nan  # all-missing among the 14 training rows
    x[15, 0] = 1e6
    d = _data({"m": x}, n_train=14)
    pre = Preprocessor(clip=5.0).fit(d, d.ids("train"))
    assert pre.features["m"] == ["m_0", "m_2", "m_4"]
    assert pre.transform(d, d.ids("test")).X["m"].max() == pytest.approx(5.0)


def test_counts_get_log1p_and_hvg_and_sparse_input_works():
    rng = np.random.default_rng(3)
    counts = rng.poisson(rng.gamma(2, 20, size=(1, 40)), size=(40, 40)).astype(np.float32)
    assert is_count_like(counts)
    assert not is_count_like(np.array([[0, 1], [1, 0]], dtype=np.float32))  # binary calls
    assert not is_count_like(np.array([[-2, 1], [2, 0]], dtype=np.float32))  # GISTIC levels
    dense = _data({"c": counts}, n_train=30)
    sparse = _data({"c": counts}, n_train=30)
    sparse.mods["c"].X = sp.csr_matrix(counts)
    a = Preprocessor(max_features=10).fit(dense, dense.ids("train"))
    b = Preprocessor(max_features=10).fit(sparse, sparse.ids("train"))
    assert a.summary()["c"]["is_count"] and a.summary()["c"]["selection"] == "highly_variable_genes"
    assert a.features == b.features and len(a.features["c"]) == 10
    np.testing.assert_allclose(
        a.transform(dense, dense.ids("test")).X["c"],
        b.transform(sparse, sparse.ids("test")).X["c"],
        atol=1e-5,
    )
    # depth-normalised log1p really applied: the transform of a row equals standardised
    # log1p of its counts scaled to the median training library size.
    st = a._mods["c"]
    j = dense.mods["c"].var_names.get_loc(st.features[0])
    assert st.target_sum == pytest.approx(float(np.median(counts[:30].sum(1))))
    row = np.log1p(counts[35, j] * st.target_sum / counts[35].sum())
    got = a.transform(dense, dense.ids("test")).X["c"][5, 0]
    assert got == pytest.approx((row - st.mean[0]) / st.scale[0], abs=1e-4)


def test_missing_modality_rows_are_zero_masked_and_save_load(tmp_path):
    rng = np.random.default_rng(4)
    d = _data({"a": rng.normal(size=(30, 4)), "b": rng.normal(size=(30, 3))}, n_train=20)
    d.mods["b"] = d.mods["b"][d.mods["b"].obs_names[:20]].copy()  # b absent from test
    pre = Preprocessor().fit(d, d.ids("train"))
    out = pre.transform(d, d.ids())
    assert out.X["b"].shape == (30, 3) and not out.mask["b"][20:].any() and out.mask["b"][:20].all()
    assert (out.X["b"][20:] == 0).all() and out.X["a"].dtype == np.float32
    assert out.y.tolist() == [0, 1] * 15 and out.classes == ["a", "b"]
    pre.save(tmp_path / "pp")
    again = Preprocessor.load(tmp_path / "pp").transform(d, d.ids())
    for m in out.X:
        np.testing.assert_array_equal(again.X[m], out.X[m])
    assert Preprocessor.load(tmp_path / "pp").features == pre.features


def test_sparse_input_with_missing_values_matches_dense():
    # A sparse matrix with NaN entries must keep the same features and give the same
    # values as its dense copy (NaN counted per feature, ignored by min and max).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6)) * (rng.random((40, 6)) < 0.5)
    x[[2, 7], 1] = np.nan
    x[11, 4] = np.nan
    dense = _data({"m": x.astype(np.float32)}, n_train=30)
    sparse = _data({"m": x.astype(np.float32)}, n_train=30)
    sparse.mods["m"].X = sp.csr_matrix(x.astype(np.float32))
    a = Preprocessor(max_features=None).fit(dense, dense.ids("train"))
    b = Preprocessor(max_features=None).fit(sparse, sparse.ids("train"))
    assert a.features == b.features and len(a.features["m"]) == 6
    np.testing.assert_allclose(
        a.transform(dense, dense.samples).X["m"],
        b.transform(sparse, sparse.samples).X["m"],
        atol=1e-6,
    )


def _depth_counts(n: int = 80, p: int = 30, seed: int = 0):
    """Poisson counts whose expected composition is shared by every sample but whose
    sequencing depth varies 20-fold: depth is the only thing that differs."""
    rng = np.random.default_rng(seed)
    comp = rng.dirichlet(np.ones(p) * 2.0)
    depth = np.exp(rng.uniform(np.log(500), np.log(10000), size=n))
    return rng.poisson(depth[:, None] * comp[None, :]).astype(np.float32), depth


def test_counts_are_depth_normalised_before_log1p_on_training_statistics():
    x, depth = _depth_counts()
    d = _data({"rna": x}, n_train=60)
    pre = Preprocessor(max_features=None, clip=None).fit(d, d.ids("train"))
    st = pre._mods["rna"]
    assert st.is_count
    # target: the median training library size (scanpy normalize_total's rule)
    assert st.target_sum == pytest.approx(float(np.median(x[:60].sum(1))))
    # a test sample sequenced 10x deeper with the same composition maps to (nearly) the
    # same values: what differs is only the Poisson noise, not the depth
    deep = np.round(x[60:61] * 10).astype(np.float32)
    d2 = _data({"rna": np.vstack([x, deep])}, n_train=60)
    out = pre.transform(d2, d2.ids(None, labelled=False)[[60, 80]]).X["rna"]
    np.testing.assert_allclose(out[0], out[1], atol=0.35)
    # without normalisation the deep copy would sit log(10) ~ 2.3 (unscaled) further away
    raw = Preprocessor(max_features=None, clip=None, log1p=False).fit(d2, d.ids("train"))
    far = raw.transform(d2, d2.ids(None, labelled=False)[[60, 80]]).X["rna"]
    assert np.abs(far[0] - far[1]).mean() > 5 * np.abs(out[0] - out[1]).mean()
    # log(depth) is no longer what the first component of the processed data follows
    proc = pre.transform(d, d.ids(None, labelled=False)).X["rna"]
    pc1 = np.linalg.svd(proc - proc.mean(0), full_matrices=False)[0][:, 0]
    assert abs(np.corrcoef(pc1, np.log(depth))[0, 1]) < 0.5


def test_counts_layer_selects_overdispersed_genes_with_seurat_v3(tmp_path):
    rng = np.random.default_rng(1)
    n, p, k = 120, 60, 10
    mean = rng.uniform(5, 20, size=p)
    x = rng.poisson(mean, size=(n, p)).astype(np.float32)
    # genes 0..k-1: negative binomial, far more variable than Poisson at the same mean
    x[:, :k] = rng.negative_binomial(2, 2 / (2 + mean[:k]), size=(n, k))
    d = _data({"rna": x}, n_train=100)
    d.mods["rna"].uns["balmm_layer"] = "counts"  # as balmm.load(layer="counts") marks it
    pre = Preprocessor(max_features=k).fit(d, d.ids("train"))
    info = pre.summary()["rna"]
    assert info["selection"] == "highly_variable_genes (seurat_v3, raw counts)"
    picked = {int(f.split("_")[1]) for f in pre.features["rna"]}
    assert len(picked & set(range(k))) >= 8
    pre.save(tmp_path / "pre")
    again = Preprocessor.load(tmp_path / "pre")
    ids = d.ids(None, labelled=False)
    np.testing.assert_array_equal(again.transform(d, ids).X["rna"], pre.transform(d, ids).X["rna"])
