"""The notebook workflow on a MuData built in memory: tl.profile -> tl.train -> tl.predict
on new samples -> scanpy neighbours on X_balmm; the same numbers as the CLI on the same data."""

from __future__ import annotations

import json
import subprocess
import sys

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import balmm
from balmm.data.simulate import make_specs, simulate

FAST = dict(pretrain_epochs=4, pretrain_patience=0, kd_epochs=2, epochs=4, patience=0,
            n_boot=10, hidden=16, embed_dim=8, lr=0.02)  # fmt: skip


def _mudata(ids, sim) -> md.MuData:
    mods = {}
    for name, a in sim.mods.items():
        keep = a.obs_names.isin(ids)
        m = ad.AnnData(np.asarray(a.X[keep], dtype=np.float32))
        m.obs_names, m.var_names = a.obs_names[keep], a.var_names
        m.obs["depth"] = np.arange(m.n_obs, dtype=float)  # a per-modality column, kept
        mods[name] = m
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    obs = sim.obs.reindex(mdata.obs_names)
    cond = obs["label"].to_numpy(dtype=object)
    cond[[2, 9]] = None  # unlabelled samples: embedded and predicted, not trained on
    mdata.obs["cond"] = cond
    mdata.obs["part"] = obs["split"].to_numpy()
    return mdata


@pytest.fixture(scope="module")
def sim():
    specs = make_specs(["strong", "weak"], n_features=[12, 10], signal=[4.0, 2.0],
                       shared=[0.8, 0.8], n_informative=[8, 6])  # fmt: skip
    return simulate(n_samples=150, n_classes=2, modalities=specs, missing_rate=0.1, seed=4)


@pytest.fixture(scope="module")
def mdatas(sim):
    ids = sim.obs.index
    # shuffled, so that input order differs from any train/val/test order
    known = pd.Index(np.random.default_rng(0).permutation(ids[:120]))
    return _mudata(known, sim), _mudata(ids[120:], sim)


@pytest.fixture(scope="module")
def trained(mdatas):
    mdata, _ = mdatas
    return balmm.tl.train(mdata, label_key="cond", split_key="part", seed=1, **FAST)


def test_profile_writes_uns_and_round_trips_h5mu(mdatas, tmp_path):
    mdata, _ = mdatas
    res = balmm.tl.profile(mdata, label_key="cond", split_key="part", n_boot=10)
    prof = mdata.uns["balmm"]["profile"]
    assert prof["verdict"]["dominant"] == res.strongest == "strong"
    assert set(prof["modalities"]) == {"strong", "weak"}
    mdata.write(tmp_path / "p.h5mu")  # JSON-like: writes to .h5mu
    back = md.read_h5mu(tmp_path / "p.h5mu")
    assert back.uns["balmm"]["profile"]["verdict"]["dominant"] == "strong"


def test_train_writes_back_aligned_to_the_input(mdatas, trained, sim):
    mdata, _ = mdatas
    emb = trained.embeddings
    z = mdata.obsm["X_balmm"]
    assert z.shape == (mdata.n_obs, emb.obsm["X_fused"].shape[1])
    for i in (0, 7, mdata.n_obs - 1):  # row i is sample i of the MuData, whatever the split
        sid = mdata.obs_names[i]
        np.testing.assert_array_equal(z[i], emb.obsm["X_fused"][emb.obs_names.get_loc(sid)])
    for name, mod in mdata.mod.items():
        zm = mod.obsm["X_balmm"]
        assert zm.shape[0] == mod.n_obs
        sid = next(s for s in mod.obs_names if s in emb.obs_names)
        row = mod.obs_names.get_loc(sid)
        np.testing.assert_array_equal(zm[row], emb.obsm[f"X_{name}"][emb.obs_names.get_loc(sid)])
    pred = trained.predictions.set_index("sample")
    lab = mdata.obs["cond"].notna().to_numpy()
    got = mdata.obs["balmm_prediction"].astype(str)[lab]
    assert (got.to_numpy() == pred.loc[mdata.obs_names[lab], "predicted"].to_numpy()).all()
    p = mdata.obs[[c for c in mdata.obs if c.startswith("balmm_proba_")]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    assert set(mdata.obs["balmm_split"].astype(str)) == {"train", "val", "test", "unlabelled"}
    assert not np.isnan(z).any()  # every row embedded, the unlabelled ones too
    unl = mdata.obs["cond"].isna().to_numpy()
    assert (mdata.obs["balmm_split"].astype(str)[unl] == "unlabelled").all()
    assert mdata.uns["balmm"]["train"]["test"]["fused"]["macro_f1"] > 0.65  # chance: 0.5
    assert "weights" in mdata.uns["balmm"]["train"]
    # gauss kernel: the umap one compiles with numba (16 s) and tests nothing more here
    sc.pp.neighbors(mdata, use_rep="X_balmm", n_neighbors=10, method="gauss")
    assert mdata.obsp["connectivities"].shape == (mdata.n_obs, mdata.n_obs)


def test_predict_new_samples_from_result_and_folder(mdatas, trained, tmp_path):
    _, new = mdatas
    res = balmm.tl.predict(trained, new, label_key="cond")
    assert new.obsm["X_balmm"].shape[0] == new.n_obs
    assert set(new.obs["balmm_split"].astype(str)) == {"predict"}
    assert list(res.predictions["sample"]) == list(new.obs_names)
    assert res.metrics["fused"]["macro_f1"] > 0.6  # 30 samples; chance is 0.5
    # the same model from a folder, written by the CLI's writer: the same numbers
    from balmm.training.report import write_outputs

    write_outputs(trained, tmp_path / "run")
    again = balmm.tl.predict(tmp_path / "run", new.copy(), "cond", out=tmp_path / "pred")
    pd.testing.assert_frame_equal(again.predictions, res.predictions)
    emb = ad.read_h5ad(tmp_path / "pred" / "embeddings.h5ad")
    assert list(emb.obs_names) == list(new.obs_names)
    np.testing.assert_array_equal(emb.obsm["X_fused"], new.obsm["X_balmm"])


def test_cli_on_the_same_data_gives_the_same_results(mdatas, trained, tmp_path):
    mdata, _ = mdatas
    path = tmp_path / "d.h5mu"
    clean = mdata.copy()
    for key in list(clean.uns):
        del clean.uns[key]
    clean.write(path)
    sets = [a for k, v in FAST.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "balmm", "train", str(path), "--label-col", "cond",
           "--split-col", "part", "--seed", "1", "--out", str(tmp_path / "cli"), *sets]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    cli_pred = pd.read_csv(tmp_path / "cli" / "predictions.csv")
    assert list(cli_pred["sample"]) == [s for s in mdata.obs_names if s in set(cli_pred["sample"])]
    cli_emb = ad.read_h5ad(tmp_path / "cli" / "embeddings.h5ad")
    assert list(cli_emb.obs_names) == list(cli_pred["sample"])  # both in input order
    ours = trained.predictions.set_index("sample").loc[cli_pred["sample"]]
    assert (ours["predicted"].to_numpy() == cli_pred["predicted"].to_numpy()).all()
    for c in (c for c in cli_pred if c.startswith("proba_")):
        np.testing.assert_array_equal(
            ours[c].to_numpy(np.float32), cli_pred[c].to_numpy(np.float32)
        )
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    for split in ("val", "test"):
        assert metrics[split]["fused"] == json.loads(json.dumps(trained.metrics[split]["fused"]))


def test_plots_of_the_notebook_results(mdatas, trained):
    pl = pytest.importorskip("balmm.pl", reason="balmm.pl not in this tree yet")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mdata, _ = mdatas
    prof = balmm.tl.profile(mdata, label_key="cond", split_key="part", n_boot=10)
    drawn = [
        pl.loss_weights(trained),
        pl.confusion_matrix(trained),
        pl.roc(trained),
        pl.mi_heatmap(prof),
        pl.kd_plan(prof),
    ]
    for ax in drawn:
        assert isinstance(ax, matplotlib.axes.Axes)
        assert ax.lines or ax.patches or ax.images or ax.collections or ax.texts
    plt.close("all")


def test_markers_of_the_notebook_run(mdatas, trained):
    pytest.importorskip("balmm.markers", reason="balmm.markers not in this tree yet")
    mdata, _ = mdatas
    table = balmm.tl.markers(trained, mdata, "cond", "part", top=5, n_folds=2)
    assert set(table["modality"]) == {"strong", "weak"}
    stored = mdata.uns["balmm"]["markers"]
    assert list(stored["feature"]) == list(table["feature"])
    # each modality's markers are its own features, at most `top` per class; marker
    # quality on known informative features is tested in test_markers.py
    for m in ("strong", "weak"):
        rows = table[table["modality"] == m]
        assert set(rows["feature"]) <= set(mdata.mod[m].var_names)
        assert rows.groupby("class").size().max() <= 5
