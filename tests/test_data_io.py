"""Readers: every INPUTS form on the bundled example data and on generated files."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from balmm.data.io import example_path, load_inputs, read_h5mu, write_h5mu
from balmm.errors import InputError
from datagen import frames, write_flexynesis, write_mogonet, write_named

EX = example_path("rosmap").parent


def test_no_inputs_is_the_bundled_rosmap_example():
    d = load_inputs([])
    assert list(d.mods) == ["mrna", "methylation", "mirna"]
    assert all(m.shape == (351, 200) for m in d.mods.values())
    counts = d.obs.groupby("split")["label"].value_counts().to_dict()
    # Class counts of the MOGONET split (README of the source data).
    assert counts == {
        ("train", "0"): 118,
        ("train", "1"): 127,
        ("test", "0"): 51,
        ("test", "1"): 55,
    }
    assert d.obs.index[0] == "rosmap_tr_000" and d.obs.index[-1] == "rosmap_te_105"
    assert d.label_mapping == {"0": "Normal control", "1": "Alzheimer's disease"}
    assert d.split_source.startswith("given")


def test_small_csv_example_matches_the_h5mu_it_was_cut_from():
    d = load_inputs(
        [f"mrna={EX / 'rosmap_small_mrna.csv'}", f"mirna={EX / 'rosmap_small_mirna.csv'}"],
        labels=[EX / "rosmap_small_labels.csv"],
    )
    full = load_inputs([])
    ids = d.obs.index
    assert len(ids) == 40 and d.split_source == "given (column 'split')"
    np.testing.assert_allclose(
        d.mods["mrna"].X, full.mods["mrna"][ids, :20].X, rtol=1e-5, atol=1e-6
    )
    assert (d.obs["label"] == full.obs.loc[ids, "label"]).all()
    assert (d.obs["split"] == full.obs.loc[ids, "split"]).all()


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".csv.gz", ".tsv.gz"])
def test_named_tables(tmp_path, ext):
    specs = write_named(tmp_path, ext=ext)
    d = load_inputs(specs, labels=[tmp_path / "labels.csv"], test_size=0.25, seed=3)
    mods, y = frames()
    for name, df in mods.items():
        np.testing.assert_allclose(d.mods[name].X, df.to_numpy(np.float32), rtol=1e-6)
        assert list(d.mods[name].var_names) == list(df.columns)
    assert (d.obs["label"] == y).all()
    assert d.split_source == "carved (stratified, test_size=0.25, seed=3)"
    # stratified and reproducible
    assert d.obs.groupby("split")["label"].value_counts()["test"].to_dict() == {
        "case": 4,
        "ctrl": 4,
    }
    again = load_inputs(specs, labels=[tmp_path / "labels.csv"], test_size=0.25, seed=3)
    assert (again.obs["split"] == d.obs["split"]).all()


def test_h5ad_sparse_stays_sparse_and_obs_gives_labels(tmp_path):
    mods, y = frames(n_feat=(6,))
    x = mods["m0"].to_numpy()
    x[x < 0.5] = 0
    a = ad.AnnData(sp.csr_matrix(x.astype(np.float32)), obs=pd.DataFrame({"cls": y}))
    a.obs_names = mods["m0"].index
    a.var_names = mods["m0"].columns
    a.write_h5ad(tmp_path / "m0.h5ad")
    mods["m1"] = mods["m0"] * 2
    mods["m1"].columns = [f"g{j}" for j in range(6)]
    mods["m1"].to_csv(tmp_path / "m1.csv")
    d = load_inputs([f"sp={tmp_path / 'm0.h5ad'}", f"dense={tmp_path / 'm1.csv'}"])
    assert sp.issparse(d.mods["sp"].X) and d.mods["sp"].X.dtype == np.float32
    assert d.label_key == "cls" and (d.obs["label"] == y).all()
    np.testing.assert_allclose(d.mods["sp"].X.toarray(), x, rtol=1e-6)


def test_mogonet_folder(tmp_path):
    truth = write_mogonet(tmp_path)
    d = load_inputs([str(tmp_path)])
    assert list(d.mods) == ["mrna", "methylation"]
    assert d.obs.index[:2].tolist() == ["tr_000", "tr_001"] and d.obs.index[-1] == "te_009"
    np.testing.assert_allclose(d.mods["mrna"]["tr_003"].X[0], truth["1_tr"][3], rtol=1e-6)
    np.testing.assert_allclose(d.mods["methylation"]["te_002"].X[0], truth["2_te"][2], rtol=1e-6)
    assert (d.obs["split"] == ["train"] * 20 + ["test"] * 10).all()
    assert d.obs["label"].tolist()[:4] == ["0", "1", "0", "1"]


def test_flexynesis_folder(tmp_path):
    truth = write_flexynesis(tmp_path)
    d = load_inputs([str(tmp_path)], label_col="subtype")
    assert set(d.mods) == {"gex", "cnv"}
    assert d.mods["gex"].shape == (28, 5)
    np.testing.assert_allclose(
        d.mods["cnv"]["p1003"].X[0], truth["test_cnv"]["p1003"].to_numpy(), rtol=1e-6
    )
    assert (d.obs.loc[d.obs.index.str.startswith("p100"), "split"] == "test").all()
    assert d.obs.loc["p4", "label"] == "B"
    with pytest.raises(InputError, match="several columns .*--label-col"):
        load_inputs([str(tmp_path)])


def test_integer_labels_test_id_file_and_stacked_label_files(tmp_path):
    specs = write_named(tmp_path)
    ids = frames()[1].index
    pd.DataFrame({"y": [7, 9] * 10}, index=ids[:20]).to_csv(tmp_path / "a.csv")
    pd.DataFrame({"y": [7, 9] * 5}, index=ids[20:]).to_csv(tmp_path / "b.csv")
    (tmp_path / "test_ids.txt").write_text("sample\n" + "\n".join(ids[:6]) + "\n")
    d = load_inputs(
        specs,
        labels=[tmp_path / "a.csv", tmp_path / "b.csv"],
        test=[str(tmp_path / "test_ids.txt")],
    )
    assert d.classes == ["7", "9"] and d.obs["label"].notna().all()
    assert d.obs.index[d.obs["split"] == "test"].tolist() == list(ids[:6])
    assert d.split_source.startswith("given (--test")


def test_test_files_per_modality_and_missing_modality(tmp_path):
    mods, y = frames(n=30)
    tr, te = mods["m0"].index[:20], mods["m0"].index[20:]
    mods["m0"].loc[tr].to_csv(tmp_path / "a_tr.csv")
    mods["m0"].loc[te].to_csv(tmp_path / "a_te.csv")
    mods["m1"].loc[tr].to_csv(tmp_path / "b_tr.csv")  # m1 absent from test, like BRCA protein
    y.to_frame().to_csv(tmp_path / "y.csv")
    d = load_inputs(
        [f"a={tmp_path / 'a_tr.csv'}", f"b={tmp_path / 'b_tr.csv'}"],
        labels=[tmp_path / "y.csv"],
        test=[f"a={tmp_path / 'a_te.csv'}"],
    )
    assert d.mods["a"].n_obs == 30 and d.mods["b"].n_obs == 20
    assert (d.obs.loc[te, "split"] == "test").all() and (d.obs.loc[tr, "split"] == "train").all()
    assert not d.presence().loc[te, "b"].any()


def test_split_column_and_unlabelled_samples_are_kept(tmp_path):
    specs = write_named(tmp_path)
    y = frames()[1]
    lab = pd.DataFrame({"grp": y, "part": np.where(np.arange(30) < 24, "train", "test")})
    lab.loc[lab.index[:3], "grp"] = np.nan
    lab.to_csv(tmp_path / "lab.csv")
    d = load_inputs(specs, labels=[tmp_path / "lab.csv"], label_col="grp", split_col="part")
    assert len(d.obs) == 30 and d.obs["label"].isna().sum() == 3
    assert len(d.ids("train")) == 21 and len(d.ids("test")) == 6
    assert any("3 of 30 samples have no label" in n for n in d.notes)


def test_no_ids_pairs_rows_by_position(tmp_path):
    mods, y = frames(n=12)
    for name, df in mods.items():
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    y.to_frame("geno").to_csv(tmp_path / "geno.csv", index=False)
    pd.DataFrame({"diet": ["a", "b", "c"] * 4}).to_csv(tmp_path / "diet.csv", index=False)
    specs = [f"{n}={tmp_path / n}.csv" for n in mods]
    d = load_inputs(
        specs, labels=[tmp_path / "geno.csv", tmp_path / "diet.csv"], label_col="diet", no_ids=True
    )
    assert d.obs.index[0] == "row_0001" and d.classes == ["a", "b", "c"]
    np.testing.assert_allclose(d.mods["m1"].X[5], mods["m1"].iloc[5].to_numpy(), rtol=1e-6)


def test_h5mu_round_trip_keeps_everything(tmp_path):
    specs = write_named(tmp_path)
    lab = frames()[1].to_frame()
    lab.iloc[:2, 0] = np.nan
    lab.to_csv(tmp_path / "labels.csv")
    d = load_inputs(specs, labels=[tmp_path / "labels.csv"], seed=5)
    d.uns["extra"] = {"a": 1}
    write_h5mu(d, tmp_path / "x.h5mu")
    r = read_h5mu(tmp_path / "x.h5mu")
    assert list(r.obs.index) == list(d.obs.index)
    pd.testing.assert_series_equal(r.obs["label"], d.obs["label"], check_dtype=False)
    pd.testing.assert_series_equal(r.obs["split"], d.obs["split"], check_dtype=False)
    for name in d.mods:
        assert list(r.mods[name].obs_names) == list(d.mods[name].obs_names)
        np.testing.assert_array_equal(r.mods[name].X, d.mods[name].X)
    assert (r.label_key, r.label_mapping, r.split_source, r.notes) == (
        d.label_key,
        d.label_mapping,
        d.split_source,
        d.notes,
    )
    assert r.uns["extra"]["a"] == 1


def test_normalise_labels_strings_integers_and_missing():
    from balmm.data.io import normalise_labels

    lab, mapping = normalise_labels(pd.Series([0.0, 1.0, np.nan, None, pd.NA, " x", 2, ""]))
    assert lab.tolist()[:2] == ["0", "1"] and lab.iloc[2:5].isna().all() and pd.isna(lab.iloc[7])
    assert lab.iloc[5] == "x" and lab.iloc[6] == "2"
    assert mapping == {"0": "0", "1": "1", "2": "2", "x": " x"}
