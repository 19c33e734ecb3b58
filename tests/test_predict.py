"""balmm predict: bundle round trip, missing modalities and features, CLI on the example."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from balmm.cli.app import main
from balmm.data.io import example_path, load_inputs
from balmm.predict import predict

EX = example_path().parent
TINY = ["--set", "pretrain_epochs=3", "--set", "kd_epochs=2", "--epochs", "3",
        "--set", "n_boot=10", "--set", "lr=0.01"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "rosmap"
    code = main(["train", "--out", str(out), "--seed", "3", *TINY])  # bundled ROSMAP example
    assert code == 0
    return out


def test_cli_train_writes_complete_folder(trained):
    m = json.loads((trained / "metrics.json").read_text())
    assert m["protocol"]["n_test"] == 106 and m["protocol"]["n_fit"] + m["protocol"]["n_val"] == 245
    assert json.loads((trained / "model" / "model.json").read_text())["config"]["seed"] == 3


def test_predict_round_trip_is_identical(trained, tmp_path):
    data = load_inputs([])
    test_ids = data.ids("test")
    df = predict(trained, data.subset(test_ids), out=tmp_path / "p")
    ref = pd.read_csv(trained / "predictions.csv").set_index("sample").loc[df["sample"]]
    cols = [c for c in df.columns if c.startswith("proba_")]
    # identical up to the CSV's decimal rendering of float32
    assert np.allclose(df[cols].to_numpy(), ref[cols].to_numpy(), atol=1e-7, rtol=0)
    assert (df["predicted"].astype(str).to_numpy() == ref["predicted"].astype(str).to_numpy()).all()
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert m["fused"]["n"] == 106


def test_cli_predict_missing_modality_and_features(trained, tmp_path, capsys):
    out = tmp_path / "pred"
    code = main(["predict", str(trained), f"mrna={EX / 'rosmap_small_mrna.csv'}",
                 f"mirna={EX / 'rosmap_small_mirna.csv'}", "--labels",
                 str(EX / "rosmap_small_labels.csv"), "--out", str(out)])  # fmt: skip
    assert code == 0
    df = pd.read_csv(out / "predictions.csv")
    assert len(df) == 40
    assert (df["modalities_used"] == "mrna;mirna").all()  # methylation absent: not used
    assert df["predicted_methylation"].isna().all()
    m = json.loads((out / "metrics.json").read_text())
    cov = m["feature_coverage"]
    assert cov["methylation"]["present"] is False
    assert cov["mrna"]["missing_fraction"] == pytest.approx(0.9)  # 20 of the 200 features given
    assert m["fused"]["n"] == 40


def test_predict_unlabelled_and_bad_model_dir(trained, tmp_path):
    data = load_inputs([])
    sub = data.subset(data.ids("test")[:5])
    sub.obs["label"] = np.nan
    df = predict(trained / "model", sub)
    assert df["true"].isna().all() and df["predicted"].notna().all()
    assert main(["predict", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
