"""Smoke subset: the few fast checks .ci/run also runs against the declared minimum versions.

Read, write, profile, train and predict end to end on tiny simulated data through the CLI,
so that every dependency (anndata, mudata, scanpy, scikit-learn, torch, typer, rich,
safetensors, matplotlib) is exercised at least once.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from balmm.cli.app import main
from balmm.data.io import load_inputs, read_h5mu, write_h5mu
from balmm.data.simulate import simulate
from balmm.training.stacking import Stacker

pytestmark = pytest.mark.smoke

TINY = ["--set", "pretrain_epochs=3", "--set", "kd_epochs=2", "--epochs", "3",
        "--set", "n_boot=10", "--set", "lr=0.01"]  # fmt: skip


@pytest.fixture(scope="module")
def sim_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("smoke") / "sim.h5mu"
    write_h5mu(simulate(n_samples=120, seed=0), path)
    return path


def test_smoke_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "balmm" in out and "--out" in out


def test_smoke_bundled_example_and_h5mu_round_trip(sim_path):
    ex = load_inputs([])
    assert {m: a.shape for m, a in ex.mods.items()} == {
        "mrna": (351, 200),
        "methylation": (351, 200),
        "mirna": (351, 200),
    }
    sim = simulate(n_samples=120, seed=0)
    back = read_h5mu(sim_path)
    assert list(back.mods) == list(sim.mods)
    for m in sim.mods:
        np.testing.assert_array_equal(np.asarray(back.mods[m].X), np.asarray(sim.mods[m].X))
    assert (back.obs["label"] == sim.obs["label"]).all()


def test_smoke_profile_train_predict(sim_path, tmp_path):
    prof = tmp_path / "prof"
    argv = ["profile", str(sim_path), "--out", str(prof), "--n-boot", "10"]
    assert main([*argv, "--estimators", "gaussian"]) == 0
    p = json.loads((prof / "profile.json").read_text())
    # simulate's defaults: a strong, a weak and a noise-only modality
    assert p["modalities"]["strong"]["probe"]["macro_f1"] > 0.7
    run = tmp_path / "run"
    assert main(["train", str(sim_path), "--out", str(run), "--seed", "0", *TINY]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["fused"]["accuracy"] > 0.7
    assert (run / "model").is_dir() and (run / "report.html").is_file()
    pred = tmp_path / "pred"
    assert main(["predict", str(run), str(sim_path), "--out", str(pred)]) == 0
    df = pd.read_csv(pred / "predictions.csv")
    assert len(df) == 120 and df["predicted"].notna().all()


def test_smoke_stacker_inner_cv():
    # scikit-learn's LogisticRegressionCV API (the fusion stacker): one informative assay.
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    logits = {"a": 2.0 * np.eye(3)[y] + rng.normal(size=(300, 3)), "b": rng.normal(size=(300, 3))}
    st = Stacker(seed=0).fit(logits, None, y)
    assert (st.predict_proba(logits, None).argmax(1) == y).mean() > 0.7
    assert st.trust_["b"] < st.trust_["a"]
