"""In-memory MuData/AnnData input (balmm.load), layers and .var feature masks, CLI too."""

from __future__ import annotations

import subprocess
import sys
import time

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import balmm
from balmm.data.io import example_path
from balmm.errors import InputError
from datagen import frames


def _mudata(n: int = 30, seed: int = 0) -> md.MuData:
    mods, y = frames(n, seed=seed)
    adatas = {}
    for name, df in mods.items():
        a = ad.AnnData(df.to_numpy(np.float32), obs=pd.DataFrame(index=df.index))
        a.var_names = list(df.columns)
        rng = np.random.default_rng(1)
        a.layers["counts"] = rng.poisson(5, size=a.shape).astype(np.float32)
        a.var["highly_variable"] = np.arange(a.n_vars) % 2 == 0
        a.obs["batch"] = np.where(np.arange(n) < n // 2, "b1", "b2")
        adatas[name] = a
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(adatas)
    mdata.obs["cond"] = y.reindex(mdata.obs_names).to_numpy()
    return mdata


def test_load_bundled_mudata_in_memory_is_fast_shares_memory_and_equals_the_file():
    mdata = md.read_h5mu(example_path())
    t0 = time.perf_counter()
    data = balmm.load(mdata)
    assert time.perf_counter() - t0 < 2.0
    from_file = balmm.load([])
    assert list(data.obs.index) == list(from_file.obs.index)
    pd.testing.assert_frame_equal(data.obs, from_file.obs)
    assert data.split_source == from_file.split_source
    for name, m in mdata.mod.items():  # float32 X is used as it is, not copied
        assert np.shares_memory(data.mods[name].X, m.X)
        np.testing.assert_array_equal(data.mods[name].X, from_file.mods[name].X)


def test_load_layer_var_key_and_modality_obs():
    mdata = _mudata()
    data = balmm.load(mdata, label_key="cond", layer={"m0": "counts"}, var_key="highly_variable")
    assert list(data.obs.index) == list(mdata.obs_names)
    m0, m1 = data.mods["m0"], data.mods["m1"]
    assert list(m0.var_names) == ["m0_f0", "m0_f2", "m0_f4"]  # the mask keeps every 2nd
    np.testing.assert_array_equal(m0.X, mdata.mod["m0"].layers["counts"][:, [0, 2, 4]])
    np.testing.assert_array_equal(m1.X, mdata.mod["m1"].X[:, [0, 2]])  # .X: no layer asked
    assert m0.uns["balmm_layer"] == "counts" and "balmm_layer" not in m1.uns
    assert list(m0.obs["batch"]) == list(mdata.mod["m0"].obs["batch"])  # per-modality obs
    assert set(data.obs["label"].dropna()) == {"ctrl", "case"}


def test_load_anndata_and_dict_of_anndata():
    mdata = _mudata()
    one = mdata.mod["m0"].copy()
    one.obs["cond"] = mdata.obs["cond"].to_numpy()
    data = balmm.load(one, label_key="cond")
    assert data.modality_names == ["data"] and list(data.obs.index) == list(one.obs_names)
    two = {"a": one, "b": mdata.mod["m1"]}
    data = balmm.load(two, label_key="cond", split_key=None)
    assert data.modality_names == ["a", "b"] and data.obs["label"].notna().all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": "raw"}, "no layer 'raw' (layers: counts)"),
        ({"layer": {"m9": "counts"}}, "layer: 'm9' is not a modality"),
        ({"var_key": "nope"}, "no .var column 'nope'"),
        ({"var_key": "batchy"}, ".var column 'batchy' is not boolean"),
        ({"label_key": "nope"}, "label column 'nope' not found"),
    ],
)
def test_load_bad_keys_name_the_key(kwargs, message):
    mdata = _mudata()
    for m in mdata.mod.values():
        m.var["batchy"] = "x"
    kwargs = {"label_key": "cond", **kwargs}
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        balmm.load(mdata, **kwargs)


def test_cli_layer_and_var_key(tmp_path):
    mdata = _mudata()
    mdata.obs["label"] = mdata.obs["cond"]
    path = tmp_path / "d.h5mu"
    mdata.write(path)
    base = [sys.executable, "-m", "balmm", "inspect", str(path)]
    ok = subprocess.run(
        [*base, "--layer", "m0=counts", "--var-key", "highly_variable"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "m0" in ok.stdout
    bad = subprocess.run([*base, "--layer", "raw"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "no layer 'raw'" in bad.stderr and "Traceback" not in bad.stderr
    data = balmm.load([str(path)], layer={"m0": "counts"}, var_key="highly_variable")
    assert data.mods["m0"].n_vars == 3 and data.mods["m0"].X.max() > 1


def test_top_level_functions_take_a_mudata():
    mdata = _mudata(n=40)
    res = balmm.profile(mdata, label_key="cond", n_boot=5, estimators=("gaussian",))
    assert set(res.to_dict()["modalities"]) == {"m0", "m1"}
    assert res.to_dict()["modalities"]["m0"]["n_samples"] == 40
