"""Markers on simulated data whose informative features are known (balmm.data.simulate
stores them in .uns['simulation'])."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import balmm
from balmm.data.simulate import ModalitySpec, simulate
from balmm.errors import InputError
from balmm.markers import COLUMNS, markers


@pytest.fixture(scope="module")
def sim():
    # 8 of 40 features per modality load on the latent; the rest are noise
    specs = {
        "strong": ModalitySpec(n_features=40, signal=3.0, noise=0.2, n_informative=8),
        "weak": ModalitySpec(n_features=40, signal=1.5, noise=0.5, n_informative=8),
    }
    data = simulate(n_samples=500, seed=1, modalities=specs, latent_dim=2)
    data.label_mapping = {"class0": "healthy", "class1": "disease"}
    return data


@pytest.fixture(scope="module")
def run(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("markers") / "run"
    return balmm.train(sim, out=out, seed=0, epochs=30, pretrain_epochs=30)


def _precision_at_k(table: pd.DataFrame, data, modality: str) -> float:
    truth = set(data.uns["simulation"]["modalities"][modality]["informative_features"])
    sub = table[table["modality"] == modality]
    best = sub.groupby("feature")["score"].max().sort_values(ascending=False)
    return len(set(best.index[: len(truth)]) & truth) / len(truth)


def test_markers_recover_the_informative_features(sim, run) -> None:
    table = pd.read_csv(run.out / "markers.csv")
    assert list(table.columns) == COLUMNS
    assert _precision_at_k(table, sim, "strong") >= 0.8
    _assert_held_out_checks_agree(table, sim)


def _assert_held_out_checks_agree(table: pd.DataFrame, data) -> None:
    """The informative markers are stable across fold models, and shuffling them on
    held-out folds costs more log-loss than shuffling the others."""
    truth = set(data.uns["simulation"]["modalities"]["strong"]["informative_features"])
    strong = table[table["modality"] == "strong"]
    real = strong[strong["feature"].isin(truth)]
    other = strong[~strong["feature"].isin(truth)]
    assert real["stability"].mean() >= 0.6
    assert real["permutation_importance"].mean() > max(0.0, other["permutation_importance"].mean())


def test_refitted_fold_models_agree_on_the_informative_features(sim, run, monkeypatch) -> None:
    """Without the run's own fold models (it cross-fitted with 5 folds, markers ask for 3)
    the pathway is refitted on each fold, in minibatches as on large data."""
    import balmm.markers as markers_mod

    monkeypatch.setattr(markers_mod, "FOLD_ROWS", 64)
    _assert_held_out_checks_agree(markers(run, sim, n_folds=3), sim)


def test_markers_table_layout(sim, run) -> None:
    table = markers(run, sim, top=5, n_folds=3)
    assert set(table["class"]) == {"healthy", "disease"}  # class names, not codes
    for _, g in table.groupby(["modality", "class"]):
        assert g["rank"].tolist() == [1, 2, 3, 4, 5]
        assert (np.diff(g["score"]) <= 0).all()
    assert table["stability"].between(0, 1).all()
    # two classes: a feature that marks one class marks the other with the opposite sign
    s = table[table["modality"] == "strong"]
    assert not set(s[s["class"] == "healthy"]["feature"]) & set(
        s[s["class"] == "disease"]["feature"]
    )


def test_markers_in_the_report(run) -> None:
    page = (run.out / "report.html").read_text("utf-8")
    assert "<h2>Markers</h2>" in page and "permutation importance" in page


def test_markers_refuse_models_without_per_modality_encoders(sim) -> None:
    r = balmm.train(sim, balancer="concat", epochs=2, pretrain_epochs=2, seed=0)
    with pytest.raises(InputError, match="concat"):
        markers(r, sim)


def test_tl_markers_on_anndata(sim, run) -> None:
    import anndata as ad

    from balmm import tl

    mods = {m: a.copy() for m, a in sim.mods.items()}
    for a in mods.values():
        a.obs = sim.obs.loc[a.obs_names, ["label", "split"]].copy()
    table = tl.markers(run, mods, label_key="label", split_key="split", top=5, n_folds=3)
    assert isinstance(mods["strong"], ad.AnnData)
    assert "markers" in mods["strong"].uns["balmm"]
    pd.testing.assert_frame_equal(table, markers(run, sim, top=5, n_folds=3))
