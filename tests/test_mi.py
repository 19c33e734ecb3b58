"""MI estimators against jointly Gaussian data whose MI is known exactly.

For pairs (a_i, b_i) with correlation rho_i (independent across i) the MI is
I = -1/2 * sum_i log2(1 - rho_i^2) bits. ``a`` is additionally rotated by a
random orthogonal matrix (MI is invariant; the estimators must not rely on the
canonical basis).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from balmm.profiling.mi import (
    bootstrap_mi,
    entropy_bits,
    gaussian_mi,
    gaussian_mi_true,
    infonce_mi,
    ksg_mi,
    label_mi_bits,
    label_mi_bootstrap,
    pair_dims,
)

N = 2000


def gaussian_pair(n: int, rhos: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = np.asarray(rhos)
    a = rng.standard_normal((n, len(r)))
    b = r * a + np.sqrt(1 - r**2) * rng.standard_normal((n, len(r)))
    rot = np.linalg.qr(rng.standard_normal((len(r), len(r))))[0]
    return a @ rot, b


def close(est: float, truth: float) -> bool:
    """The stated tolerance: within 10% of the truth or 0.05 bits, whichever is larger."""
    return abs(est - truth) <= max(0.10 * truth, 0.05)


# (rhos) cases: independence in 1 and 3 dims, weak/strong 1-D, two 2-D cases.
KSG_CASES = [[0.0], [0.0, 0.0, 0.0], [0.5], [0.9], [0.6, 0.6], [0.9, 0.9]]
GAUSS_CASES = KSG_CASES + [[0.8, 0.5, 0.3], [0.5, 0.5, 0.5, 0.5], [0.0] * 6]


@pytest.mark.parametrize("rhos", KSG_CASES, ids=str)
def test_ksg_matches_gaussian_truth(rhos: list[float]) -> None:
    a, b = gaussian_pair(N, rhos)
    assert close(ksg_mi(a, b, k=3), gaussian_mi_true(rhos))


def test_ksg_higher_dimension_bias_is_downward_and_bounded() -> None:
    # Documented KSG behaviour: in 4+4 dims it underestimates; tolerance 20% here.
    rhos = [0.5, 0.5, 0.5, 0.5]
    truth = gaussian_mi_true(rhos)
    est = ksg_mi(*gaussian_pair(N, rhos), k=3)
    assert truth * 0.8 <= est <= truth * 1.05


@pytest.mark.parametrize("rhos", GAUSS_CASES, ids=str)
def test_gaussian_closed_form(rhos: list[float]) -> None:
    a, b = gaussian_pair(N, rhos, seed=1)
    assert close(gaussian_mi(a, b), gaussian_mi_true(rhos))


def test_gaussian_shrinkage_when_dims_approach_n() -> None:
    # 40 + 40 dims on 100 samples: the empirical estimate is heavily biased up;
    # Ledoit-Wolf shrinkage ("auto") must stay near the truth of 0 bits.
    a, b = gaussian_pair(100, [0.0] * 40)
    raw = gaussian_mi(a, b, shrinkage=None)
    shrunk = gaussian_mi(a, b)
    assert raw > 5.0
    assert shrunk < 1.0


def test_gaussian_bias_correction_centres_independence_on_zero() -> None:
    # 4 + 4 independent dims on 245 samples (the distillation plan's setting): the raw
    # estimate sits at its bias d_a*d_b/(2n ln 2) = 0.047 bits; the corrected one is ~0
    # on average and its half-sample interval reaches below 0 in every replicate.
    raw, corrected, lower = [], [], []
    for seed in range(20):
        a, b = gaussian_pair(245, [0.0] * 4, seed=seed)
        raw.append(gaussian_mi(a, b))
        fn = partial(gaussian_mi, bias_correct=True)
        est, (lo, _) = bootstrap_mi(fn, a, b, n_boot=50, seed=seed)
        corrected.append(est)
        lower.append(lo)
    bias = 16 / (2 * 245 * math.log(2))
    assert np.mean(raw) == pytest.approx(bias, abs=0.01)
    assert abs(np.mean(corrected)) < 0.01
    assert max(lower) < 0


@pytest.mark.parametrize("rhos", GAUSS_CASES, ids=str)
def test_gaussian_bias_corrected_matches_truth(rhos: list[float]) -> None:
    a, b = gaussian_pair(N, rhos, seed=2)
    assert close(gaussian_mi(a, b, bias_correct=True), gaussian_mi_true(rhos))


def test_ksg_chunking_gives_identical_result() -> None:
    a, b = gaussian_pair(500, [0.7, 0.3])
    full = ksg_mi(a, b, chunk_size=500)
    chunked = ksg_mi(a, b, chunk_size=37)
    assert full == pytest.approx(chunked, abs=1e-9)


def test_infonce_is_a_lower_bound_that_sees_dependence() -> None:
    torch.set_num_threads(1)  # tiny model: threads only add overhead on shared cores
    truth = gaussian_mi_true([0.9, 0.6])
    a, b = gaussian_pair(1500, [0.9, 0.6])
    est = infonce_mi(a, b, batch_size=128, steps=150, seed=0)
    # Tolerance: a lower bound (plus 0.1 bits of estimation noise) that recovers >= 50%.
    assert 0.5 * truth <= est <= truth + 0.1
    a0, b0 = gaussian_pair(1500, [0.0, 0.0], seed=3)
    assert infonce_mi(a0, b0, batch_size=128, steps=100, seed=0) <= 0.1


def test_bootstrap_interval_covers_truth() -> None:
    rhos = [0.6]
    truth = gaussian_mi_true(rhos)
    a, b = gaussian_pair(1000, rhos, seed=2)
    est, (lo, hi) = bootstrap_mi(ksg_mi, a, b, n_boot=40, seed=0)
    assert lo < est < hi
    assert lo <= truth <= hi
    est_g, (lo_g, hi_g) = bootstrap_mi(gaussian_mi, a, b, n_boot=40, resample="bootstrap")
    assert lo_g <= truth <= hi_g


def test_label_mi_bounds() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=4000)
    h = entropy_bits(y)
    assert h == pytest.approx(2.0, abs=0.01)
    perfect = np.eye(4)[y]
    assert label_mi_bits(y, perfect) == pytest.approx(h, abs=1e-6)
    prior = np.tile(np.bincount(y) / len(y), (len(y), 1))
    assert label_mi_bits(y, prior) == pytest.approx(0.0, abs=1e-9)
    # Binary symmetric channel with error e: I = 1 - H2(e) bits; a calibrated probe attains it.
    e = 0.2
    y2 = rng.integers(0, 2, size=20000)
    x = np.where(rng.random(len(y2)) < e, 1 - y2, y2)
    proba = np.where(x[:, None] == np.arange(2), 1 - e, e)
    truth = 1 - (-(e * np.log2(e) + (1 - e) * np.log2(1 - e)))
    est, (lo, hi) = label_mi_bootstrap(y2, proba, n_boot=100)
    assert est == pytest.approx(truth, abs=0.02)
    assert lo <= truth <= hi


@pytest.mark.gpu
def test_ksg_and_infonce_on_cuda() -> None:
    rhos = [0.6, 0.6]
    a, b = gaussian_pair(N, rhos)
    assert close(ksg_mi(a, b, device="cuda"), gaussian_mi_true(rhos))
    assert ksg_mi(a, b, device="cuda") == pytest.approx(ksg_mi(a, b), abs=0.01)
    est = infonce_mi(a, b, device="cuda", steps=200)
    assert 0.5 * gaussian_mi_true(rhos) <= est <= gaussian_mi_true(rhos) + 0.1


# ----------------------------------------------------------------- pair embedding widths


@pytest.mark.parametrize(
    ("n", "pa", "pb", "expected"),
    [(245, 200, 200, (7, 8)), (150, 300, 100, (6, 6)), (245, 6, 500, (6, 10)),
     (600, 6, 6, (6, 6)), (100, 6, 6, (5, 5)), (10, 50, 50, (1, 2))],
)  # fmt: skip
def test_pair_dims_keeps_the_product_within_n_over_4(n, pa, pb, expected) -> None:
    da, db = pair_dims(n, pa, pb)
    assert (da, db) == expected
    assert da * db <= max(1, n / 4)


@pytest.mark.parametrize(
    ("n", "rhos"),
    [(600, [0.6] * 8), (2000, [0.7, 0.6, 0.5, 0.4, 0.4, 0.3, 0.3, 0.3, 0.2, 0.2, 0.2, 0.2])],
    ids=["8 dims n=600", "12 dims n=2000"],
)
def test_gaussian_mi_recovers_correlation_spread_over_more_than_5_dims(n, rhos) -> None:
    """Correlated pairs spread over 8 / 12 dimensions: a 5-component embedding misses a part
    of the MI; the widths of pair_dims keep all of it (bias-corrected Gaussian, 10%)."""
    a, b = gaussian_pair(n, rhos, seed=3)
    truth = gaussian_mi_true(rhos)
    da, db = pair_dims(n, a.shape[1], b.shape[1])
    assert (da, db) == (len(rhos), len(rhos))
    est = gaussian_mi(a[:, :da], b[:, :db], bias_correct=True)
    assert close(est, truth), (est, truth)
    five = gaussian_mi(a @ _top_pcs(a, 5), b @ _top_pcs(b, 5), bias_correct=True)
    assert five < 0.9 * truth  # what a fixed 5 components reports


def _top_pcs(x: np.ndarray, k: int) -> np.ndarray:
    return np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:k].T


def test_gaussian_mi_is_about_zero_for_independent_embeddings_at_pair_dims() -> None:
    for n in (60, 245, 2000):
        rng = np.random.default_rng(n)
        da, db = pair_dims(n, 100, 100)
        draws = [(rng.standard_normal((n, da)), rng.standard_normal((n, db))) for _ in range(20)]
        vals = [gaussian_mi(a, b, bias_correct=True) for a, b in draws]
        assert abs(np.mean(vals)) < 0.03, (n, np.mean(vals))


def test_profile_pair_mi_uses_every_dimension_of_two_6_feature_modalities() -> None:
    """balmm profile on two 6-feature modalities with true I(a;b) = 1.95 bits; a fixed
    5-component embedding reported about 1.5 bits on such data."""
    import anndata as ad
    import pandas as pd

    import balmm
    from balmm.data.dataset import MultiOmicsData

    rhos, n = [0.8, 0.7, 0.6, 0.5, 0.4, 0.3], 300
    a, b = gaussian_pair(n, rhos, seed=5)
    rng = np.random.default_rng(5)
    ids = pd.Index([f"s{i}" for i in range(n)], name="sample")
    y = np.where(a[:, 0] + rng.standard_normal(n) > 0, "A", "B")
    mods = {
        m: ad.AnnData(
            x.astype(np.float32),
            obs=pd.DataFrame(index=ids),
            var=pd.DataFrame(index=[f"{m}{j}" for j in range(6)]),
        )
        for m, x in (("a", a), ("b", b))
    }
    data = MultiOmicsData(mods=mods, obs=pd.DataFrame({"label": y, "split": "train"}, ids))
    pairs = balmm.profile(data, n_boot=5, seed=0, estimators=("gaussian",)).pairs
    assert pairs[0]["embedding"] == "PCA(6) vs PCA(6)"
    assert close(pairs[0]["mi_bits"], gaussian_mi_true(rhos)), pairs[0]["mi_bits"]


def test_train_pair_mi_uses_as_many_dims_as_the_sample_supports() -> None:
    """train's I(Z_a; Z_b) (the CCH gap) on 16-wide embeddings whose correlation is spread
    over 8 directions: the automatic width (mi_pca_dims = 0) keeps the known MI; a fixed 4
    components, the old default, misses part of it."""
    from balmm.training.kd import pair_mi

    n, rhos = 600, [0.6] * 8
    a, b = gaussian_pair(n, rhos, seed=5)
    rng = np.random.default_rng(5)
    # embed in 16 dimensions with independent filler, then rotate (what an encoder gives)
    pad = lambda x: np.hstack([x, 0.5 * rng.standard_normal((n, 8))])  # noqa: E731
    rot_a, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    rot_b, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    za, zb = pad(a) @ rot_a, pad(b) @ rot_b
    truth = gaussian_mi_true(rhos)
    est, lo, hi = pair_mi(za, zb, "gaussian", 0, 20, seed=0)
    assert close(est, truth), (est, truth)
    fixed, _, _ = pair_mi(za, zb, "gaussian", 4, 20, seed=0)
    assert fixed < 0.9 * truth


def test_train_pair_mi_above_its_cap_uses_a_subsample(monkeypatch) -> None:
    """Above PAIR_MI_MAX samples the pair MI is estimated on a seeded subsample of that many
    rows (bounded memory on single-cell sizes): still the known MI, and the same estimate
    as on those rows alone."""
    from balmm.training import kd

    rhos = [0.7, 0.5]
    za, zb = gaussian_pair(3000, rhos, seed=11)
    monkeypatch.setattr(kd, "PAIR_MI_MAX", 1000)
    est, lo, hi = kd.pair_mi(za, zb, "gaussian", 0, 20, seed=3)
    assert close(est, gaussian_mi_true(rhos)), est
    rows = np.sort(np.random.default_rng(3).choice(3000, 1000, replace=False))
    assert kd.pair_mi(za[rows], zb[rows], "gaussian", 0, 20, seed=3) == (est, lo, hi)
