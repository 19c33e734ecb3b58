"""Simulated paired multi-omics data whose modality imbalance is known.

Generative model (per sample i with class y_i, per modality m, latent width k):

    z_mi = [ sqrt(r_m) * (s_m * A[y_i] + h_i)  |  sqrt(1 - r_m) * (s_m * B_m[y_i] + e_mi) ]
    x_mi = [z_mi @ W_m  (informative features),  0 (the rest)] + noise_m * eps

``A`` are class centroids shared by all modalities and ``B_m`` centroids unique to
modality m (orthonormal / sqrt 2, so two classes lie exactly ``s_m`` apart in
the latent), ``h_i`` a shared and ``e_mi`` a private standard normal latent
(within-class variation), ``s_m`` the signal strength, ``r_m`` the shared
fraction and ``W_m`` a random 2k x n_informative loading with unit-norm columns. So a
modality's label information grows with ``s_m`` and with how many informative
features average its noise away; a modality with ``s_m = 0`` carries no label
information at all (it still shares ``h`` with the others when ``r_m > 0``).

Count-like modalities are drawn as Poisson (``dispersion=0``) or negative
binomial counts of the positive rate ``size_i * exp(base_j + x_mij / 2)``.

The ground truth goes into ``MultiOmicsData.uns["simulation"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from balmm.data.bayes import GaussianBlock, simulation_bayes
from balmm.data.dataset import LABEL, SPLIT, TEST, TRAIN, MultiOmicsData
from balmm.data.splits import stratified_split
from balmm.errors import InputError

GROUND_TRUTH_KEY = "simulation"


@dataclass
class ModalitySpec:
    """How one simulated modality is generated.

    Attributes:
        n_features: number of features.
        signal: class separation in units of the within-class latent sd (0 = no label signal).
        noise: sd of the per-feature noise added to every feature.
        n_informative: features that load on the latent (default: max(5, n_features // 5)).
        shared: fraction of the signal and of the within-class variation that is shared
            with the other modalities (0 = fully modality-unique, 1 = fully shared).
        missing_rate: fraction of samples lacking this modality (default: ``simulate``'s).
        count_like: draw non-negative integer counts instead of continuous values
            (default: ``simulate``'s).
        dispersion: negative-binomial dispersion of counts (0 = Poisson).
        mean_count: typical count of a feature.
        class_groups: classes this modality cannot tell apart, as a partition of the class
            codes (e.g. ``[[0], [1, 2]]``: it separates class 0 from the rest, not 1 from 2);
            classes in one group share one centroid. Default: every class its own.
    """

    n_features: int = 100
    signal: float = 1.0
    noise: float = 1.0
    n_informative: int | None = None
    shared: float | None = None
    missing_rate: float | None = None
    count_like: bool | None = None
    dispersion: float = 0.2
    mean_count: float = 20.0
    class_groups: list[list[int]] | None = None


DEFAULT_MODALITIES: dict[str, ModalitySpec] = {
    "strong": ModalitySpec(n_features=100, signal=2.5, noise=1.0),
    "weak": ModalitySpec(n_features=100, signal=1.0, noise=1.0),
    "noise": ModalitySpec(n_features=100, signal=0.0, noise=1.0),
}

# Named scenarios: (n_classes, modalities). "complementary": a strong assay that tells
# class0 from the rest but not class1 from class2, and a weak one that tells class2 from
# the rest only; only together do they separate all three classes.
SCENARIOS: dict[str, tuple[int, dict[str, ModalitySpec]]] = {
    "default": (2, DEFAULT_MODALITIES),
    "complementary": (
        3,
        {
            "strong": ModalitySpec(
                n_features=20, n_informative=10, signal=4.0, class_groups=[[0], [1, 2]]
            ),
            "weak": ModalitySpec(
                n_features=20, n_informative=10, signal=2.5, class_groups=[[0, 1], [2]]
            ),
        },
    ),
}


def _as_list(value: Any, n: int, name: str) -> list:
    if value is None or isinstance(value, str) or not isinstance(value, Sequence):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise InputError(f"{name}: expected {n} values (one per modality), got {len(value)}")
    return value


def make_specs(
    names: Sequence[str],
    n_features: int | Sequence[int] = 100,
    signal: float | Sequence[float] = 1.0,
    noise: float | Sequence[float] = 1.0,
    n_informative: int | Sequence[int] | None = None,
    shared: float | Sequence[float] | None = None,
) -> dict[str, ModalitySpec]:
    """Specs from parallel lists (or scalars applied to every modality)."""
    names = list(names)
    if not names or len(set(names)) != len(names):
        raise InputError(f"modality names must be non-empty and unique, got {names}")
    cols = {
        "n_features": _as_list(n_features, len(names), "n_features"),
        "signal": _as_list(signal, len(names), "signal"),
        "noise": _as_list(noise, len(names), "noise"),
        "n_informative": _as_list(n_informative, len(names), "n_informative"),
        "shared": _as_list(shared, len(names), "shared"),
    }
    return {
        name: ModalitySpec(**{k: v[i] for k, v in cols.items()}) for i, name in enumerate(names)
    }


def _coerce_spec(name: str, spec: ModalitySpec | Mapping[str, Any]) -> ModalitySpec:
    if isinstance(spec, ModalitySpec):
        return ModalitySpec(**asdict(spec))
    if isinstance(spec, Mapping):
        known = {f.name for f in fields(ModalitySpec)}
        unknown = set(spec) - known
        if unknown:
            raise InputError(
                f"modality {name!r}: unknown spec key(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return ModalitySpec(**dict(spec))
    raise InputError(f"modality {name!r}: spec must be a ModalitySpec or a dict, got {spec!r}")


def _check_spec(name: str, s: ModalitySpec, n_classes: int) -> None:
    if s.class_groups is not None:
        flat = sorted(c for g in s.class_groups for c in g)
        if flat != list(range(n_classes)) or any(not g for g in s.class_groups):
            raise InputError(
                f"modality {name!r}: class_groups must partition the classes 0..{n_classes - 1},"
                f" got {s.class_groups}"
            )
    if s.n_features < 1:
        raise InputError(f"modality {name!r}: n_features must be >= 1, got {s.n_features}")
    if not 1 <= s.n_informative <= s.n_features:
        raise InputError(
            f"modality {name!r}: n_informative must be in 1..{s.n_features}, got {s.n_informative}"
        )
    if s.signal < 0 or s.noise < 0:
        raise InputError(f"modality {name!r}: signal and noise must be >= 0")
    if not 0.0 <= s.shared <= 1.0:
        raise InputError(f"modality {name!r}: shared must be in [0, 1], got {s.shared}")
    if not 0.0 <= s.missing_rate < 1.0:
        raise InputError(f"modality {name!r}: missing_rate must be in [0, 1), got {s.missing_rate}")
    if s.dispersion < 0 or s.mean_count <= 0:
        raise InputError(f"modality {name!r}: dispersion must be >= 0 and mean_count > 0")


def _centroids(rng: np.random.Generator, n_classes: int, k: int) -> np.ndarray:
    """n_classes orthonormal rows in R^k divided by sqrt(2): pairwise distance exactly 1."""
    q, _ = np.linalg.qr(rng.standard_normal((k, n_classes)))
    return q.T / math.sqrt(2.0)


def _class_separation(
    s: ModalitySpec, r: float, mu_shared: np.ndarray, mu_unique: np.ndarray, loadings: np.ndarray
) -> float:
    """Mean pairwise Mahalanobis distance between the class means of the (continuous)
    informative features: the exact linear separability of the modality.

    Feature means are ``s * [sqrt(r) A_c | sqrt(1-r) B_c] @ W`` and the within-class
    covariance is ``W^T diag(r, .., 1-r, ..) W + noise^2 I``; for two classes the Bayes
    accuracy is Phi(D / 2).
    """
    k = mu_shared.shape[1]
    means = s.signal * np.hstack([math.sqrt(r) * mu_shared, math.sqrt(1 - r) * mu_unique])
    means = means @ loadings
    var = np.concatenate([np.full(k, r), np.full(k, 1 - r)])
    cov = loadings.T @ (var[:, None] * loadings) + s.noise**2 * np.eye(loadings.shape[1])
    prec = np.linalg.pinv(cov)
    d = [
        math.sqrt(max(float((means[a] - means[b]) @ prec @ (means[a] - means[b])), 0.0))
        for a in range(len(means))
        for b in range(a + 1, len(means))
    ]
    return float(np.mean(d))


def simulate(
    n_samples: int = 300,
    n_classes: int = 2,
    modalities: Mapping[str, ModalitySpec | Mapping[str, Any]] | None = None,
    shared: float = 0.5,
    missing_rate: float = 0.0,
    count_like: bool = False,
    test_size: float = 0.3,
    latent_dim: int = 4,
    class_weights: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiOmicsData:
    """Generate paired multi-modal data with known per-modality informativeness.

    Args:
        n_samples: number of samples (the union over modalities).
        n_classes: number of classes, named ``class0``, ``class1``, ...
        modalities: name -> :class:`ModalitySpec` (or a dict of its fields); default
            :data:`DEFAULT_MODALITIES` (a strong, a weak and a noise-only modality).
            Use :func:`make_specs` to build specs from parallel lists.
        shared: default shared-signal fraction for specs that leave it unset.
        missing_rate: default fraction of samples lacking each modality. Every sample
            keeps at least one modality.
        count_like: default for specs that leave ``count_like`` unset.
        test_size: fraction of samples in the stratified test split.
        latent_dim: width k of each latent block (raised to n_classes if smaller).
        class_weights: class proportions (default: balanced).
        seed: random seed; the same seed gives the same data.

    Returns:
        MultiOmicsData with ``obs`` columns ``label`` and ``split`` and the ground truth in
        ``uns["simulation"]``: per modality ``signal``, ``noise``, ``effective_snr`` (mean
        pairwise Mahalanobis distance between class means, see :func:`_class_separation`),
        ``informativeness_rank`` (1 = most informative), ``noise_only``, ``informative_features``,
        realised ``missing_rate``, ``bayes_accuracy``; plus ``dominant`` and ``noise_only``
        modality names and ``bayes_accuracy`` (``fused``, ``fused_observed``,
        ``modalities``; see :func:`balmm.data.bayes.simulation_bayes`).
    """
    if n_classes < 2:
        raise InputError(f"n_classes must be >= 2, got {n_classes}")
    if n_samples < 4 * n_classes:
        raise InputError(f"n_samples must be >= 4 * n_classes, got {n_samples}")
    if latent_dim < 1:
        raise InputError(f"latent_dim must be >= 1, got {latent_dim}")
    raw = DEFAULT_MODALITIES if modalities is None else modalities
    if not raw:
        raise InputError("at least one modality is needed")
    specs: dict[str, ModalitySpec] = {}
    for name, spec in raw.items():
        s = _coerce_spec(str(name), spec)
        if s.n_informative is None:
            s.n_informative = min(s.n_features, max(5, s.n_features // 5))
        if s.shared is None:
            s.shared = shared
        if s.missing_rate is None:
            s.missing_rate = missing_rate
        if s.count_like is None:
            s.count_like = count_like
        _check_spec(str(name), s, n_classes)
        specs[str(name)] = s

    rng = np.random.default_rng(seed)
    if class_weights is None:
        probs = np.full(n_classes, 1.0 / n_classes)
    else:
        probs = np.asarray(class_weights, dtype=float)
        if probs.shape != (n_classes,) or (probs <= 0).any():
            raise InputError(f"class_weights must be {n_classes} positive numbers")
        probs = probs / probs.sum()
    # Exact class counts (largest remainder) so small runs keep every class.
    counts = np.floor(probs * n_samples).astype(int)
    counts[np.argsort(-(probs * n_samples - counts))[: n_samples - counts.sum()]] += 1
    if counts.min() < 2:
        raise InputError("every class needs at least 2 samples; raise n_samples")
    y = rng.permutation(np.repeat(np.arange(n_classes), counts))
    ids = pd.Index([f"sim{i:05d}" for i in range(n_samples)], name="sample")
    class_names = [f"class{c}" for c in range(n_classes)]

    # Orthonormal class centroids scaled so that any two classes lie exactly ``signal``
    # apart in both the shared and the unique latent block (random unit vectors would
    # make the separation, hence the informativeness, depend on luck).
    k = max(latent_dim, n_classes)
    shared_centroids = _centroids(rng, n_classes, k)
    shared_latent = rng.standard_normal((n_samples, k))
    names = list(specs)

    # Missing modalities: each modality independently, then give samples left with
    # nothing one random modality back (so the realised rate is slightly lower).
    present = np.column_stack([rng.random(n_samples) >= specs[n].missing_rate for n in names])
    empty = np.flatnonzero(~present.any(axis=1))
    present[empty, rng.integers(0, len(names), size=len(empty))] = True

    mods: dict[str, ad.AnnData] = {}
    truth_mods: dict[str, dict[str, Any]] = {}
    blocks: dict[str, GaussianBlock] = {}
    for j, name in enumerate(names):
        s = specs[name]
        r = s.shared
        if s.class_groups is None:
            unique_centroids = _centroids(rng, n_classes, k)
            mod_shared = shared_centroids
        else:  # classes of one group share a centroid: this modality cannot tell them apart
            group = np.empty(n_classes, dtype=int)
            for g, members in enumerate(s.class_groups):
                group[members] = g
            unique_centroids = _centroids(rng, len(s.class_groups), k)[group]
            mod_shared = np.stack([shared_centroids[group == group[c]].mean(0) for c in group])
        # Latent = [shared block | unique block]; class distance^2 = r s^2 + (1-r) s^2 = s^2.
        z = np.hstack(
            [
                math.sqrt(r) * (s.signal * mod_shared[y] + shared_latent),
                math.sqrt(1 - r)
                * (s.signal * unique_centroids[y] + rng.standard_normal((n_samples, k))),
            ]
        )
        loadings = rng.standard_normal((2 * k, s.n_informative))
        loadings /= np.linalg.norm(loadings, axis=0, keepdims=True)
        x = s.noise * rng.standard_normal((n_samples, s.n_features))
        informative = np.sort(rng.choice(s.n_features, size=s.n_informative, replace=False))
        x[:, informative] += z @ loadings
        separation = _class_separation(s, r, mod_shared, unique_centroids, loadings)
        if not s.count_like:
            class_means = s.signal * np.hstack(
                [math.sqrt(r) * mod_shared, math.sqrt(1 - r) * unique_centroids]
            )
            blocks[name] = GaussianBlock(class_means @ loadings, loadings, r, s.noise)
        if s.count_like:
            base = rng.normal(math.log(s.mean_count), 1.0, size=s.n_features)
            size = rng.lognormal(0.0, 0.3, size=(n_samples, 1))
            rate = size * np.exp(base + 0.5 * x)
            if s.dispersion > 0:
                # NB(mean=rate, var=rate + dispersion * rate^2) as a gamma-Poisson mixture.
                rate = rng.gamma(1.0 / s.dispersion, s.dispersion * rate)
            x = rng.poisson(rate).astype(np.float64)
        keep = present[:, j]
        var_names = [f"{name}_f{k:04d}" for k in range(s.n_features)]
        mods[name] = ad.AnnData(
            X=x[keep].astype(np.float32),
            obs=pd.DataFrame(index=pd.Index(ids[keep], name=None)),
            var=pd.DataFrame(index=var_names),
        )
        truth_mods[name] = {
            "n_features": int(s.n_features),
            "n_informative": int(s.n_informative),
            "informative_features": [var_names[k] for k in informative],
            "signal": float(s.signal),
            "noise": float(s.noise),
            "shared": float(s.shared),
            "effective_snr": separation,
            "noise_only": bool(s.signal == 0.0),
            "count_like": bool(s.count_like),
            "dispersion": float(s.dispersion) if s.count_like else 0.0,
            "missing_rate_requested": float(s.missing_rate),
            "missing_rate": float(1.0 - keep.mean()),
        }

    order = sorted(names, key=lambda n: -truth_mods[n]["effective_snr"])
    for rank, name in enumerate(order, start=1):
        truth_mods[name]["informativeness_rank"] = rank

    bayes = simulation_bayes(blocks, names, present, counts / counts.sum(), seed)
    for name in names:
        truth_mods[name]["bayes_accuracy"] = bayes["modalities"].get(name) if bayes else None

    labels = np.array(class_names, dtype=object)[y]
    _, test_ids = stratified_split(ids, y, test_size=test_size, seed=seed)
    obs = pd.DataFrame({LABEL: labels, SPLIT: TRAIN}, index=ids)
    obs.loc[test_ids, SPLIT] = TEST

    truth = {
        "seed": int(seed),
        "n_samples": int(n_samples),
        "n_classes": int(n_classes),
        "classes": class_names,
        "latent_dim": int(k),
        "test_size": float(test_size),
        "dominant": order[0],
        "ranking": order,
        "noise_only": [n for n in names if truth_mods[n]["noise_only"]],
        "bayes_accuracy": bayes,
        "modalities": truth_mods,
        "model": "z = [sqrt(r)*(s*A[y] + h) | sqrt(1-r)*(s*B_m[y] + e)]; "
        "x = z @ W on informative features + noise*eps (counts: Poisson/NB of "
        "size*exp(base + x/2))",
    }
    return MultiOmicsData(
        mods=mods,
        obs=obs,
        label_key=LABEL,
        label_mapping={c: c for c in class_names},
        split_source=f"carved (stratified, test_size={test_size}, seed={seed})",
        source=f"balmm simulate (seed={seed}, {n_samples} samples, modalities {names})",
        uns={GROUND_TRUTH_KEY: truth},
    )
