"""``balmm.profile``: the imbalance report card of a labelled multi-omics dataset.

Data flow: quality of each raw modality -> preprocessing fitted on the training
samples -> cross-validated probes per modality and on the concatenation ->
label information I(X_m; Y) -> pairwise I(Z_a; Z_b) on PCA embeddings ->
distillation plan -> Shapley contributions -> verdict. Only **training**
samples are used for everything that involves labels; the test split is never
read here.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from balmm.data.dataset import MultiOmicsData
from balmm.data.pairing import pairing_table
from balmm.data.splits import stratified_subsample
from balmm.errors import ConfigError, InputError
from balmm.profiling import mi as mi_mod
from balmm.profiling.mi_estimators import resolve_device
from balmm.profiling.pairs import PRIMARY_ESTIMATOR, pairwise_mi
from balmm.profiling.plan import distillation_plan, teachers_of
from balmm.profiling.probes import ProbeResult, chance_macro_f1, cv_macro_f1, run_probe
from balmm.profiling.quality import modality_quality
from balmm.profiling.result import ProfileResult
from balmm.profiling.shapley import MAX_EXACT, shapley
from balmm.profiling.verdict import build_verdict
from balmm.progress import NULL_PROGRESS, Progress
from balmm.threads import default_threads, scoped_threads

ESTIMATORS = mi_mod.ESTIMATORS


SMALL_PROBLEM = 5000  # training samples: below this, extra threads only add overhead


def profile(
    data: MultiOmicsData,
    out: str | Path | None = None,
    max_samples: int = 2000,
    max_probe_samples: int | None = None,
    n_boot: int = 200,
    estimators: tuple[str, ...] | list[str] = ("ksg", "gaussian"),
    probe: str = "logreg",
    n_folds: int = 5,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> ProfileResult:
    """Profile modality quality, strength, information and imbalance.

    Args:
        data: labelled multi-omics data (only its ``train`` samples are used).
        out: if given, the report folder is written there (see :meth:`ProfileResult.write`).
        max_samples: cap for the parts whose cost grows faster than linearly
            (pairwise MI, robust outlier distances): above it a stated random
            subsample is used.
        max_probe_samples: cap for the probes and Shapley values (default
            ``10 * max_samples``; stratified subsample above it).
        n_boot: bootstrap replicates for metric and label-MI intervals; pairwise
            MI uses ``min(n_boot, 50)`` half-samples.
        estimators: pairwise MI estimators among "ksg", "gaussian", "infonce".
        probe: "logreg" (scikit-learn) or "mlp" (small torch MLP).
        device: "auto", "cpu" or "cuda" for the torch parts (KSG, InfoNCE, MLP probe).
        threads: CPU threads for torch and BLAS during the call. Default: 1 when
            there are fewer than 5000 training samples (the many small solves
            run several times slower with more threads, measured on 2 shared
            cores), otherwise the libraries' defaults.
    """
    if threads is None:
        threads = 1 if len(data.ids("train")) < SMALL_PROBLEM else default_threads()
    with scoped_threads(threads):
        return _profile(
            data,
            out,
            max_samples,
            max_probe_samples,
            n_boot,
            estimators,
            probe,
            n_folds,
            seed,
            device,
            progress,
        )


def _profile(
    data: MultiOmicsData,
    out: str | Path | None,
    max_samples: int,
    max_probe_samples: int | None,
    n_boot: int,
    estimators: tuple[str, ...] | list[str],
    probe: str,
    n_folds: int,
    seed: int,
    device: str,
    progress: Progress,
) -> ProfileResult:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    estimators = list(estimators)
    for e in estimators:
        mi_mod.estimator_fn(e, None, seed)  # validates the names before any work
    if probe not in ("logreg", "mlp"):
        raise ConfigError(f"probe must be 'logreg' or 'mlp', got {probe!r}")
    if max_samples < 50:
        raise ConfigError(f"max_samples must be at least 50, got {max_samples}")
    max_probe_samples = max_probe_samples or 10 * max_samples
    dev = resolve_device(device)
    names = data.modality_names
    classes = data.classes
    if len(classes) < 2:
        raise InputError(
            f"profile needs labels with at least 2 classes; found {len(classes)} "
            f"(label source: {data.label_key or 'none'})"
        )
    train_all = data.ids("train")
    if len(train_all) < 10:
        raise InputError(
            f"profile needs at least 10 labelled training samples, got {len(train_all)}"
        )
    warn: list[str] = []
    y_all = data.y(train_all)
    keep = stratified_subsample(len(train_all), y_all, max_probe_samples, seed)
    train_ids = train_all[keep]
    if len(train_ids) < len(train_all):
        warn.append(
            f"probes and Shapley values use a stratified random subsample of {len(train_ids)} "
            f"of {len(train_all)} training samples (--max-samples x 10)"
        )

    # ---------------------------------------------------------------- quality
    progress.start("quality", "Quality per modality", total=len(names))
    t0 = time.perf_counter()
    quality = {}
    for m in names:
        quality[m] = modality_quality(data.mods[m], len(data.obs), max_samples, seed)
        progress.update("quality")
    progress.finish("quality")
    timings["quality"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- preprocess
    t0 = time.perf_counter()
    from balmm.data.preprocess import Preprocessor

    pre = Preprocessor().fit(data, train_ids)
    pdata = pre.transform(data, train_ids)
    y = pdata.y
    timings["preprocess"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- probes
    t0 = time.perf_counter()
    progress.start("probes", f"Cross-validated probes ({probe})", total=len(names) + 1)
    probes: dict[str, ProbeResult] = {}
    for m in names:
        rows = pdata.mask[m]
        ym = y[rows]
        if len(ym) < 10 or len(np.unique(ym)) < 2:
            warn.append(f"modality {m!r}: too few labelled training samples ({len(ym)}) to probe")
            progress.update("probes")
            continue
        probes[m] = run_probe(pdata.X[m][rows], ym, classes, probe, n_folds, n_boot, seed, str(dev))
        progress.update("probes")
    if not probes:
        raise InputError("no modality has enough labelled training samples to profile")
    partial = [m for m in names if not pdata.mask[m].all()]

    def concat(subset: list[str]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        # Samples lacking a modality have zero rows there; a presence indicator
        # lets the probe tell "missing" from "average". Blocks = one per modality.
        parts, blocks, lo = [], [], 0
        for m in subset:
            block = [pdata.X[m]]
            if m in partial:
                block.append(pdata.mask[m][:, None].astype(np.float32))
            width = sum(b.shape[1] for b in block)
            parts += block
            blocks.append((lo, lo + width))
            lo += width
        return np.hstack(parts), blocks

    probe_names = list(probes)
    x_all, blocks_all = concat(probe_names)
    all_probe = run_probe(x_all, y, classes, probe, n_folds, n_boot, seed, str(dev), blocks_all)
    progress.update("probes")
    progress.finish("probes")
    timings["probes"] = time.perf_counter() - t0
    # v(empty set) for the Shapley values: what a label-blind probe scores (the
    # mean macro-F1 of the concatenated probe's predictions against shuffled
    # labels); the majority-class guess when no bootstrap was requested.
    chance = (
        all_probe.null_macro_f1_mean
        if math.isfinite(all_probe.null_macro_f1_mean)
        else chance_macro_f1(y)
    )

    # ---------------------------------------------------------------- pairwise MI
    t0 = time.perf_counter()
    n_boot_mi = min(n_boot, 50)
    primary = PRIMARY_ESTIMATOR if PRIMARY_ESTIMATOR in estimators else estimators[0]
    pairs, pair_primary = pairwise_mi(
        pdata.X,
        pdata.mask,
        probe_names,
        estimators,
        primary,
        max_samples,
        n_boot_mi,
        seed,
        dev,
        warn,
        progress,
    )
    timings["pair_mi"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- plan
    strength = {m: (p.macro_f1, p.macro_f1_ci[0]) for m, p in probes.items()}
    label_mi = {m: (p.mi_label_bits, p.mi_label_bits_ci[0]) for m, p in probes.items()}
    plan = distillation_plan(strength, label_mi, pair_primary)

    # ---------------------------------------------------------------- Shapley
    t0 = time.perf_counter()
    # exact: the value function is called once per subset, the empty one included
    n_sub = 2 ** len(probe_names) if len(probe_names) <= MAX_EXACT else None
    progress.start("shapley", "Shapley contributions", total=n_sub)

    # The L2 strength of the full-set probe (median over its folds) is reused for every
    # subset: same model class for all subsets, and 2^M nested searches would dominate.
    c_fixed = all_probe.C if probe == "logreg" and math.isfinite(all_probe.C) else None

    def value(subset: frozenset) -> float:
        progress.update("shapley")
        if not subset:
            return chance
        if set(subset) == set(probe_names):
            return all_probe.macro_f1  # same folds and seed: identical to re-running
        cols = [m for m in probe_names if m in subset]
        x_s, blocks_s = concat(cols)
        return cv_macro_f1(x_s, y, len(classes), probe, n_folds, seed, str(dev), c_fixed, blocks_s)

    phi, loo, method, game = shapley(probe_names, value, seed=seed)
    progress.finish("shapley")
    timings["shapley"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- assemble
    mods_out: dict[str, dict] = {}
    for m in names:
        entry = dict(quality[m])
        entry["n_train_samples"] = int(pdata.mask[m].sum())
        entry["n_features_used"] = len(pre.features[m])
        if m in probes:
            p = probes[m]
            entry["probe"] = p.to_dict()
            entry["mi_label_bits"] = p.mi_label_bits
            entry["mi_label_bits_ci"] = list(p.mi_label_bits_ci)
            entry["teachers"] = [{"teacher": t, "weight": w} for t, w in teachers_of(plan, m)]
        mods_out[m] = entry
    sum_mi = float(sum(p.mi_label_bits for p in probes.values()))
    redundancy = {
        "mi_all_label_bits": all_probe.mi_label_bits,
        "mi_all_label_bits_ci": list(all_probe.mi_label_bits_ci),
        "sum_mi_label_bits": sum_mi,
        "ratio_sum_to_all": sum_mi / all_probe.mi_label_bits
        if all_probe.mi_label_bits > 0
        else float("nan"),
        "label_entropy_bits": mi_mod.entropy_bits(y, len(classes)),
    }
    shap_out = {
        "values": phi,
        "leave_one_out": loo,
        "method": method,
        "value_function": f"{n_folds}-fold CV probe macro-F1 on the concatenated subset",
        "empty_set_macro_f1": chance,
        "full_set_macro_f1": all_probe.macro_f1,
        "subsets": [
            {"modalities": sorted(s), "macro_f1": v}
            for s, v in sorted(game.cache.items(), key=lambda kv: (len(kv[0]), sorted(kv[0])))
        ],
    }
    class_counts = pd.Series(y).map(dict(enumerate(classes))).value_counts()
    dataset = {
        "source": data.source,
        "label_key": data.label_key,
        "split_source": data.split_source,
        "classes": classes,
        "label_mapping": dict(data.label_mapping),
        "n_samples": int(len(data.obs)),
        "n_train_samples": int(len(train_all)),
        "n_train_used": int(len(train_ids)),
        "train_class_counts": {c: int(class_counts.get(c, 0)) for c in classes},
        "modalities": names,
        "notes": list(data.notes),
    }
    settings = {
        "probe": probe,
        "n_folds": int(all_probe.n_folds),
        "n_boot": n_boot,
        "n_boot_pair_mi": n_boot_mi,
        "max_samples": max_samples,
        "max_probe_samples": max_probe_samples,
        "estimators": estimators,
        "primary_estimator": primary,
        "pair_embedding_dims": f"d_a * d_b <= n/{mi_mod.PAIR_DIM_BUDGET}",
        "device": str(dev),
        "seed": seed,
        "preprocessing": pre.summary(),
        "uses": "training samples only; the test split is not read",
        "platform": platform.platform(),
    }
    concatenated = {
        "modalities": probe_names,
        "probe": all_probe.to_dict(),
        "mi_label_bits": all_probe.mi_label_bits,
        "mi_label_bits_ci": list(all_probe.mi_label_bits_ci),
        "chance_macro_f1": chance,
        "majority_class_macro_f1": chance_macro_f1(y),
    }
    verdict = build_verdict(
        dataset=dataset,
        modalities=mods_out,
        concatenated=concatenated,
        plan=plan,
        shapley_values=phi,
        redundancy=redundancy,
        extra_warnings=warn,
    )
    shap_out["verdict"] = verdict["text"]
    timings["total"] = time.perf_counter() - t_start
    result = ProfileResult(
        dataset=dataset,
        settings=settings,
        modalities=mods_out,
        concatenated=concatenated,
        pairs=pairs,
        kd_plan=plan,
        shapley=shap_out,
        redundancy=redundancy,
        verdict=verdict,
        warnings=verdict["warnings"],
        timings_s=timings,
        pairing=pairing_table(data),
    )
    if out is not None:
        result.write(out)
    return result
