"""balmm.data.simulate: the ground truth written into .uns matches what the data contain."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cross_decomposition import CCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from balmm.data.simulate import ModalitySpec, make_specs, simulate
from balmm.errors import InputError


def _probe_accuracy(data, name: str, log: bool = False) -> float:
    """Cross-validated accuracy of a linear probe on one modality (train+test pooled)."""
    m = data.mods[name]
    x = np.log1p(m.X) if log else m.X
    y = data.y(m.obs_names)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000))
    return float(cross_val_score(clf, x, y, cv=5).mean())


def test_probe_ranks_modalities_like_the_ground_truth() -> None:
    data = simulate(n_samples=400, n_classes=2, seed=3)
    truth = data.uns["simulation"]
    assert truth["dominant"] == "strong"
    assert truth["ranking"] == ["strong", "weak", "noise"]
    assert truth["noise_only"] == ["noise"]
    acc = {n: _probe_accuracy(data, n) for n in data.mods}
    assert acc["strong"] > acc["weak"] + 0.1
    assert acc["weak"] > acc["noise"]
    assert acc["strong"] > 0.7
    # A noise-only modality is at chance (2 balanced classes).
    assert abs(acc["noise"] - 0.5) < 0.1


@pytest.mark.parametrize("signal, noise, shared", [(1.0, 1.0, 0.5), (2.0, 0.5, 0.0)])
def test_recorded_separation_predicts_the_bayes_accuracy(signal, noise, shared) -> None:
    """For two Gaussian classes the best linear rule reaches Phi(D/2), D = Mahalanobis."""
    from scipy.stats import norm
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    specs = make_specs(["m"], n_features=30, signal=signal, noise=noise, shared=shared)
    data = simulate(n_samples=4000, modalities=specs, seed=11)
    d = data.uns["simulation"]["modalities"]["m"]["effective_snr"]
    m = data.mods["m"]
    acc = cross_val_score(LinearDiscriminantAnalysis(), m.X, data.y(m.obs_names), cv=4).mean()
    assert acc == pytest.approx(norm.cdf(d / 2), abs=0.03)


def test_informative_features_carry_the_signal() -> None:
    data = simulate(n_samples=400, modalities={"a": ModalitySpec(signal=3.0)}, seed=0)
    truth = data.uns["simulation"]["modalities"]["a"]
    m = data.mods["a"]
    y = data.y(m.obs_names)
    # Class mean difference per feature, in units of its sd.
    diff = np.abs(m.X[y == 0].mean(0) - m.X[y == 1].mean(0)) / m.X.std(0)
    inf = m.var_names.isin(truth["informative_features"])
    assert inf.sum() == truth["n_informative"] == 20
    assert diff[inf].mean() > 3 * diff[~inf].mean()


def test_missing_rate_split_and_labels() -> None:
    data = simulate(n_samples=1000, missing_rate=0.3, test_size=0.25, n_classes=3, seed=1)
    truth = data.uns["simulation"]
    pres = data.presence()
    assert pres.any(axis=1).all()  # every sample keeps a modality
    for name, m in data.mods.items():
        realised = 1 - len(m) / 1000
        assert abs(realised - 0.3) < 0.05
        assert truth["modalities"][name]["missing_rate"] == pytest.approx(realised)
        assert m.X.dtype == np.float32
    assert set(data.obs["split"]) == {"train", "test"}
    assert (data.obs["split"] == "test").mean() == pytest.approx(0.25, abs=0.01)
    assert data.classes == ["class0", "class1", "class2"]
    # Stratified: each class keeps its share in the test split.
    test_share = data.obs.groupby("label")["split"].apply(lambda s: (s == "test").mean())
    assert (abs(test_share - 0.25) < 0.03).all()


def test_count_like_is_integer_and_keeps_ranking() -> None:
    data = simulate(n_samples=400, count_like=True, seed=2)
    for m in data.mods.values():
        assert (m.X >= 0).all()
        assert np.array_equal(m.X, np.round(m.X))
        assert m.X.max() > 10
    acc = {n: _probe_accuracy(data, n, log=True) for n in data.mods}
    assert acc["strong"] > acc["weak"] > acc["noise"] - 0.05
    assert abs(acc["noise"] - 0.5) < 0.1


def test_shared_signal_makes_modalities_correlated_beyond_the_label() -> None:
    def held_out_canonical_corr(shared: float) -> float:
        specs = make_specs(["a", "b"], n_features=40, signal=0.0, noise=0.5, shared=shared)
        d = simulate(n_samples=600, modalities=specs, latent_dim=2, seed=4)
        xa, xb = d.mods["a"].X, d.mods["b"].X
        cca = CCA(n_components=1).fit(xa[:300], xb[:300])
        ua, ub = cca.transform(xa[300:], xb[300:])
        return abs(float(np.corrcoef(ua[:, 0], ub[:, 0])[0, 1]))

    assert held_out_canonical_corr(1.0) > 0.7
    assert held_out_canonical_corr(0.0) < 0.3


def test_same_seed_same_data() -> None:
    a = simulate(n_samples=60, seed=7)
    b = simulate(n_samples=60, seed=7)
    c = simulate(n_samples=60, seed=8)
    assert np.array_equal(a.mods["strong"].X, b.mods["strong"].X)
    assert not np.array_equal(a.mods["strong"].X, c.mods["strong"].X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_classes": 1}, "n_classes"),
        ({"modalities": {"a": {"signal": 1.0, "bogus": 2}}}, "bogus"),
        ({"modalities": {"a": {"n_features": 10, "n_informative": 20}}}, "n_informative"),
        ({"missing_rate": 1.0}, "missing_rate"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        simulate(n_samples=40, **kwargs)


def test_make_specs_checks_lengths() -> None:
    with pytest.raises(InputError, match="signal"):
        make_specs(["a", "b"], signal=[1.0])


def test_simulate_cli_writes_h5mu_with_ground_truth(tmp_path) -> None:
    from balmm.cli.app import main
    from balmm.data.io import read_h5mu

    out = tmp_path / "sim.h5mu"
    rc = main(
        ["simulate", "--out", str(out), "--samples", "80", "--classes", "3",
         "--modalities", "rna,prot", "--features", "30,20", "--signal", "2,0",
         "--missing-rate", "0.2", "--count-like", "--seed", "5"]
    )  # fmt: skip
    assert rc == 0
    data = read_h5mu(out)
    truth = data.uns["simulation"]
    assert str(truth["dominant"]) == "rna"
    assert list(truth["noise_only"]) == ["prot"]
    assert data.mods["rna"].n_vars == 30 and data.mods["prot"].n_vars == 20
    assert np.array_equal(data.mods["rna"].X, np.round(data.mods["rna"].X))
    assert data.classes == ["class0", "class1", "class2"]
    assert set(data.obs["split"]) == {"train", "test"}
    # The file holds exactly what the library generates for the same arguments.
    again = simulate(
        n_samples=80, n_classes=3, seed=5, missing_rate=0.2, count_like=True,
        modalities=make_specs(["rna", "prot"], n_features=[30, 20], signal=[2.0, 0.0]),
    )  # fmt: skip
    assert np.array_equal(again.mods["rna"].X, data.mods["rna"].X)


def test_simulate_cli_bad_option_exits_2(tmp_path, capsys) -> None:
    from balmm.cli.app import main

    rc = main(["simulate", "--out", str(tmp_path / "x.h5mu"), "--signal", "1,2"])
    assert rc == 2
    assert "--signal" in capsys.readouterr().err
    assert not (tmp_path / "x.h5mu").exists()


def test_complementary_scenario_bayes_accuracies_are_consistent() -> None:
    """Stored Bayes accuracies: fused above each modality, each modality limited by the
    classes it cannot tell apart, and LDA fitted on a large sample reaches them."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from balmm.data.simulate import SCENARIOS

    n_classes, mods = SCENARIOS["complementary"]
    data = simulate(n_samples=12000, n_classes=n_classes, modalities=mods, seed=4)
    bayes = data.uns["simulation"]["bayes_accuracy"]
    per_mod = bayes["modalities"]
    assert bayes["fused"] > max(per_mod.values()) + 0.1
    assert bayes["fused_observed"] == bayes["fused"]  # nothing missing
    # each tells only two groups of classes apart: at most 2/3 correct
    assert all(1 / 3 < v < 2 / 3 for v in per_mod.values())
    assert per_mod["strong"] > per_mod["weak"]
    y = data.y(data.samples)
    half = len(y) // 2
    inputs = {m: data.mods[m].X for m in data.mods}
    inputs["fused"] = np.hstack(list(inputs.values()))
    for name, x in inputs.items():
        acc = LinearDiscriminantAnalysis().fit(x[:half], y[:half]).score(x[half:], y[half:])
        target = bayes["fused"] if name == "fused" else per_mod[name]
        # Bayes is the ceiling; 6000 test draws have a standard error of ~0.006
        assert acc == pytest.approx(target, abs=0.02), name


def test_bayes_accuracy_of_two_classes_matches_phi_half_d_and_missing_patterns() -> None:
    from scipy.stats import norm

    specs = make_specs(["a", "b"], n_features=10, signal=[2.0, 1.0], shared=0.0)
    data = simulate(n_samples=300, modalities=specs, missing_rate=0.3, seed=5)
    truth = data.uns["simulation"]
    bayes = truth["bayes_accuracy"]
    for m in ("a", "b"):  # two classes, equal priors: Phi(D / 2), D = recorded separation
        d = truth["modalities"][m]["effective_snr"]
        assert bayes["modalities"][m] == pytest.approx(norm.cdf(d / 2), abs=0.003)
        assert truth["modalities"][m]["bayes_accuracy"] == bayes["modalities"][m]
    # unshared signal: the two independent distances add in quadrature
    da, db = (truth["modalities"][m]["effective_snr"] for m in ("a", "b"))
    assert bayes["fused"] == pytest.approx(norm.cdf(np.hypot(da, db) / 2), abs=0.003)
    # with missing modalities the per-sample average lies between the parts and the whole
    assert bayes["modalities"]["a"] < bayes["fused_observed"] < bayes["fused"]
    counts = simulate(n_samples=100, modalities=specs, count_like=True, seed=5)
    assert counts.uns["simulation"]["bayes_accuracy"] is None  # not Gaussian: not computed


def test_class_groups_must_partition_the_classes() -> None:
    with pytest.raises(InputError, match="class_groups"):
        simulate(n_classes=3, modalities={"m": ModalitySpec(class_groups=[[0], [1]])})


def test_simulate_cli_complementary_scenario(tmp_path) -> None:
    from balmm.cli.app import main
    from balmm.data.io import read_h5mu
    from balmm.data.simulate import SCENARIOS

    out = tmp_path / "c.h5mu"
    assert main(["simulate", "--scenario", "complementary", "-n", "90", "--out", str(out)]) == 0
    data = read_h5mu(out)
    n_classes, mods = SCENARIOS["complementary"]
    again = simulate(n_samples=90, n_classes=n_classes, modalities=mods, shared=0.5)
    assert list(data.mods) == ["strong", "weak"] and len(data.classes) == 3
    assert np.array_equal(again.mods["weak"].X, data.mods["weak"].X)
    stored = data.uns["simulation"]["bayes_accuracy"]
    assert float(stored["fused"]) == again.uns["simulation"]["bayes_accuracy"]["fused"]
    assert main(["simulate", "--scenario", "nope", "--out", str(tmp_path / "n.h5mu")]) == 2
