"""Probe scoring, Shapley values and quality figures against answers known in advance."""

from __future__ import annotations

import itertools

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from balmm.profiling.probes import chance_macro_f1, run_probe, score_predictions
from balmm.profiling.quality import modality_quality
from balmm.profiling.shapley import CachedGame, exact_shapley, sampled_shapley, shapley


def test_vectorised_scores_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    proba = rng.dirichlet(np.ones(3), size=300)
    proba[np.arange(300), y] += rng.random(300)  # better than chance, not perfect
    pred = proba.argmax(axis=1)
    s = score_predictions(y, proba, ["a", "b", "c"], n_boot=50, seed=1)
    assert s["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert s["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    per_class = f1_score(y, pred, average=None)
    assert [s["per_class_f1"][c] for c in "abc"] == pytest.approx(list(per_class))
    lo, hi = s["macro_f1_ci"]
    assert lo < s["macro_f1"] < hi


def test_probe_separates_signal_from_noise() -> None:
    rng = np.random.default_rng(0)
    n = 240
    y = np.repeat([0, 1], n // 2)
    signal = rng.standard_normal((n, 20)) + 1.2 * y[:, None] * (np.arange(20) < 5)
    noise = rng.standard_normal((n, 20))
    strong = run_probe(signal, y, ["a", "b"], n_boot=100)
    null = run_probe(noise, y, ["a", "b"], n_boot=100)
    # Bayes accuracy of this design is Phi(1.2 * sqrt(5) / 2) ~ 0.91.
    assert strong.macro_f1_ci[0] > 0.8
    assert strong.mi_label_bits_ci[0] > 0.3
    # Noise: no better than chance, and label MI ~0 (the lower bound may go below 0).
    assert null.macro_f1_ci[0] < 0.6
    assert null.mi_label_bits < 0.05
    assert strong.oof_proba.shape == (n, 2)
    assert chance_macro_f1(y) == pytest.approx(1 / 3)


def test_exact_shapley_of_known_games() -> None:
    # Additive game: values are the individual worths.
    w = {"a": 0.3, "b": 0.1, "c": 0.0}
    phi = exact_shapley(CachedGame(list(w), lambda s: sum(w[p] for p in s)))
    assert phi == pytest.approx(w)

    # Glove game: v(S) = 1 iff S holds the left glove L and one right glove R1/R2.
    def glove(s: frozenset) -> float:
        return float("L" in s and ("R1" in s or "R2" in s))

    phi = exact_shapley(CachedGame(["L", "R1", "R2"], glove))
    assert phi == pytest.approx({"L": 2 / 3, "R1": 1 / 6, "R2": 1 / 6})


def test_sampled_shapley_approaches_exact_and_loo() -> None:
    players = [f"m{i}" for i in range(7)]
    rng = np.random.default_rng(0)
    weights = dict(zip(players, rng.random(7), strict=True))

    def v(s: frozenset) -> float:  # concave in the total: interactions present
        return float(np.sqrt(sum(weights[p] for p in s)))

    exact = exact_shapley(CachedGame(players, v))
    phi, loo, method, _ = shapley(players, v, max_exact=6, n_perm=400, seed=0)
    assert method.startswith("sampled")
    for p in players:
        # Monte-Carlo error with 400 antithetic permutations: ~0.01; tolerance 0.025.
        assert phi[p] == pytest.approx(exact[p], abs=0.025)
    # Efficiency: contributions sum to v(all) - v(empty).
    assert sum(phi.values()) == pytest.approx(v(frozenset(players)), abs=1e-9)
    full = frozenset(players)
    assert loo["m0"] == pytest.approx(v(full) - v(full - {"m0"}))
    assert sampled_shapley(CachedGame(players, v), n_perm=2)  # runs with tiny budgets


def _adata(x: np.ndarray, prefix: str = "s") -> ad.AnnData:
    a = ad.AnnData(X=x.astype(np.float32))
    a.obs_names = [f"{prefix}{i}" for i in range(x.shape[0])]
    return a


def test_quality_figures_on_constructed_data() -> None:
    rng = np.random.default_rng(0)
    n = 300
    # Rank-3 continuous data plus small noise, 5 constant features, 6 planted outliers.
    latent = rng.standard_normal((n, 3))
    x = latent @ rng.standard_normal((3, 40)) + 0.3 * rng.standard_normal((n, 40))
    x[:, :5] = 1.0
    x[:6, 5:] += 6.0 * rng.standard_normal((6, 35))
    q = modality_quality(_adata(x), n_union=400, seed=0)
    assert q["n_samples"] == n and q["n_features"] == 40
    assert q["coverage"] == pytest.approx(0.75)
    assert q["missing_fraction"] == 0.0
    assert q["near_constant_fraction"] == pytest.approx(5 / 40)
    assert not q["count_like"]
    assert 3 <= q["effective_dim_90"] <= 10
    assert set(q["outlier_samples"]) >= {f"s{i}" for i in range(6)}
    assert q["n_outlier_samples"] <= 12

    nan_mask = rng.random(x.shape) < 0.1
    x[nan_mask] = np.nan
    assert modality_quality(_adata(x), n_union=n)["missing_fraction"] == pytest.approx(
        nan_mask.mean()
    )

    counts = rng.poisson(20, size=(100, 30)).astype(float)
    counts[:, :10] = 0
    qc = modality_quality(_adata(counts), n_union=100)
    assert qc["count_like"] and qc["nonnegative"]
    assert qc["zero_fraction"] >= 10 / 30
    assert qc["integer_fraction"] == 1.0


def test_quality_degenerate_rows_do_not_crash() -> None:
    x = np.zeros((60, 8))
    x[:3, 0] = 1.0  # nearly all rows identical: robust covariance is singular
    q = modality_quality(_adata(x), n_union=60)
    assert q["n_samples"] == 60
    assert isinstance(pd.Series(q).to_dict(), dict)
    assert list(itertools.islice(q, 1)) == ["n_samples"]
