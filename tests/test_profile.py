"""balmm.profile end to end on simulated data whose imbalance is known, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import balmm
from balmm.cli import main
from balmm.data.simulate import simulate
from balmm.outputs import to_json
from balmm.profiling.plan import KDEdge


@pytest.fixture(scope="module")
def sim():
    # strong / weak / noise modalities (simulate's defaults), 10% of samples lack
    # each modality so the partial-pairing paths run too.
    return simulate(n_samples=300, missing_rate=0.1, seed=0)


@pytest.fixture(scope="module")
def result(sim):
    return balmm.profile(sim, n_boot=60, seed=0)


def test_profile_recovers_the_simulated_imbalance(sim, result) -> None:
    truth = sim.uns["simulation"]
    d = result.to_dict()
    assert result.strongest == truth["dominant"] == "strong"
    assert d["verdict"]["dominant"] == "strong"
    assert "noise" in d["verdict"]["uninformative"]
    assert "weak" in d["verdict"]["weak_informative"]
    mods = d["modalities"]
    assert mods["strong"]["mi_label_bits_ci"][0] > mods["weak"]["mi_label_bits"]
    assert mods["noise"]["mi_label_bits_ci"][0] <= 0
    shap = d["shapley"]["values"]
    assert shap["strong"] > shap["weak"] > shap["noise"]
    # Efficiency of exact Shapley: contributions sum to v(all) - v(empty).
    total = d["shapley"]["full_set_macro_f1"] - d["shapley"]["empty_set_macro_f1"]
    assert sum(shap.values()) == pytest.approx(total, abs=1e-9)
    assert d["shapley"]["method"] == "exact"
    assert isinstance(d["shapley"]["verdict"], str) and "strong" in d["shapley"]["verdict"]


def test_profile_json_contract(sim, result) -> None:
    d = json.loads(to_json(result.to_dict()))
    for m in ("strong", "weak", "noise"):
        e = d["modalities"][m]
        for key in (
            "n_samples",
            "n_features",
            "missing_fraction",
            "coverage",
            "zero_fraction",
            "count_like",
            "dynamic_range_log10",
            "near_constant_fraction",
            "effective_dim_90",
            "n_outlier_samples",
            "mi_label_bits",
            "mi_label_bits_ci",
        ):
            assert key in e, key
        p = e["probe"]
        for key in ("macro_f1", "macro_f1_ci", "accuracy", "balanced_accuracy", "per_class_f1"):
            assert key in p, key
        # Quality-aware: estimates use only the samples that have the modality.
        assert p["n_samples"] == e["n_train_samples"] < d["dataset"]["n_train_samples"]
        assert p["macro_f1_ci"][0] <= p["macro_f1"] <= p["macro_f1_ci"][1]
    assert len(d["pairs"]) == 3 * 2  # 3 pairs x (ksg, gaussian)
    for p in d["pairs"]:
        assert {"a", "b", "mi_bits", "mi_bits_ci", "estimator"} <= set(p)
    assert len(d["kd_plan"]) == 6
    for e in d["kd_plan"]:
        assert {"teacher", "student", "gap_bits", "enabled", "reason"} <= set(e)
    assert all(isinstance(e, KDEdge) for e in result.kd_plan)
    # Only training samples were used.
    assert d["dataset"]["n_train_samples"] == len(sim.ids("train"))


def test_profile_write_report(result, tmp_path: Path) -> None:
    out = result.write(tmp_path / "prof")
    names = {p.name for p in (out / "plots").iterdir()}
    assert names == {
        "macro_f1.png",
        "mi_heatmap.png",
        "shapley.png",
        "per_class_f1.png",
        "kd_plan.png",
    }
    for png in (out / "plots").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "profile.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # self-contained
    md = (out / "profile.md").read_text()
    assert "## Verdict" in md and "plots/mi_heatmap.png" in md
    assert json.loads((out / "profile.json").read_text())["modalities"]


def test_subsampling_is_stated() -> None:
    data = simulate(n_samples=400, seed=1)
    r = balmm.profile(data, max_samples=60, max_probe_samples=150, n_boot=20)
    d = r.to_dict()
    assert d["dataset"]["n_train_used"] == 150
    assert all(p["n_samples"] == 60 and p["subsampled"] for p in d["pairs"])
    assert any("subsample" in w for w in d["warnings"])


def test_profile_refuses_bad_settings(sim) -> None:
    from balmm.errors import ConfigError, InputError

    with pytest.raises(ConfigError, match="estimator"):
        balmm.profile(sim, estimators=["nope"])
    unlabelled = sim.subset(sim.samples)
    unlabelled.obs["label"] = np.nan
    with pytest.raises(InputError, match="labels"):
        balmm.profile(unlabelled)


def test_cli_profile(sim, tmp_path: Path, capsys) -> None:
    from balmm.data.io import write_h5mu

    path = write_h5mu(sim, tmp_path / "sim.h5mu")
    out = tmp_path / "cli"
    code = main(
        ["profile", str(path), "--out", str(out), "--n-boot", "20", "--estimators", "gaussian"]
    )
    assert code == 0
    assert (out / "profile.html").is_file()
    pairing = pd.read_csv(out / "pairing.csv", index_col="sample")
    assert pairing.index.tolist() == sim.obs.index.tolist()
    assert pairing["n_modalities"].between(0, len(sim.mods)).all()
    printed = capsys.readouterr().out
    assert "strong" in printed and "Verdict" in printed
    assert main(["profile", str(path), "--out", str(out), "--estimators", "bogus"]) == 2


@pytest.mark.gpu
def test_profile_on_cuda(sim) -> None:
    r = balmm.profile(sim, n_boot=20, device="cuda", estimators=["ksg", "infonce"])
    assert r.settings["device"].startswith("cuda")
    assert r.strongest == "strong"


@pytest.mark.shared
def test_profile_rosmap_shared(shared_data: Path, tmp_path: Path) -> None:
    from balmm.data.io import load_inputs

    data = load_inputs([str(shared_data / "mogonet_rosmap")])
    r = balmm.profile(data, out=tmp_path / "rosmap", n_boot=50)
    d = r.to_dict()
    assert set(d["modalities"]) == {"mrna", "methylation", "mirna"}
    # Every assay of ROSMAP is informative on training-set CV (macro-F1 well above chance).
    assert all(e["probe"]["macro_f1_ci"][0] > 0.55 for e in d["modalities"].values())
    assert (tmp_path / "rosmap" / "profile.html").is_file()


@pytest.mark.shared
def test_profile_brca_mrna_strongest(shared_data: Path) -> None:
    # TCGA-BRCA subset (GPL, so not bundled): mRNA is known to be the strongest assay.
    from balmm.data.io import load_inputs

    b = shared_data / "tcga_brca_mixomics" / "h5ad"
    data = load_inputs([f"{m}={b / m}.h5ad" for m in ("mrna", "mirna", "protein")])
    r = balmm.profile(data, n_boot=30)
    assert r.strongest == "mrna"
    assert r.modalities["mrna"]["probe"]["macro_f1"] > 0.9
