"""The plain-language verdict, derived only from the measured numbers.

Rules (all on training-sample cross-validation, using interval lower ends so
that nothing is claimed on luck):

* **dominant**: the modality with the highest probe macro-F1 whose lower CI
  exceeds every other modality's macro-F1 point estimate. If none qualifies,
  the leader is named but "not reliably dominant".
* **informative**: label-MI lower CI > 0 bits, or macro-F1 above the 95th
  percentile of its label-permutation null (a permutation test at 5%).
* **weak but informative**: informative and not the leader (distillation and
  balancing candidates). **uninformative**: not informative (balmm does not
  force them).
* **expected benefit of balancing**: "high" when weak-but-informative assays
  exist and the concatenation does not beat the best single assay (the
  signature of modality imbalance); "moderate" when weak informative assays
  exist but concatenation already beats the leader; "low" when no other assay
  carries reliable label information.
"""

from __future__ import annotations

from balmm.profiling.plan import KDEdge

TINY_CLASS = 10  # training samples
LOW_PER_CLASS = 25  # per-class samples below which MI/F1 intervals are wide
LOW_COVERAGE = 0.5
HIGH_MISSING = 0.2
HIGH_OUTLIERS = 0.10


def build_verdict(
    dataset: dict,
    modalities: dict[str, dict],
    concatenated: dict,
    plan: list[KDEdge],
    shapley_values: dict[str, float],
    redundancy: dict,
    extra_warnings: list[str] | None = None,
) -> dict:
    """Structured verdict plus its text (see the module docstring for the rules)."""
    probed = {m: e for m, e in modalities.items() if "probe" in e}
    f1 = {m: e["probe"]["macro_f1"] for m, e in probed.items()}
    f1_lo = {m: e["probe"]["macro_f1_ci"][0] for m, e in probed.items()}
    mi_lo = {m: e["mi_label_bits_ci"][0] for m, e in probed.items()}
    leader = max(f1, key=f1.get)
    others = [m for m in probed if m != leader]
    reliable = all(f1_lo[leader] > f1[m] for m in others)
    null95 = {m: e["probe"].get("null_macro_f1_95") for m, e in probed.items()}
    informative = {
        m: bool(
            (mi_lo[m] is not None and mi_lo[m] > 0)
            or (null95[m] is not None and null95[m] == null95[m] and f1[m] > null95[m])
        )
        for m in probed
    }
    weak = [m for m in others if informative[m]]
    uninf = [m for m in probed if not informative[m]]
    concat_f1 = concatenated["probe"]["macro_f1"]
    dominated = concat_f1 <= f1[leader]
    if not weak:
        benefit = "low"
    elif dominated:
        benefit = "high"
    else:
        benefit = "moderate"

    text: list[str] = []
    p = probed[leader]["probe"]
    ci = p["macro_f1_ci"]
    if reliable and others:
        text.append(
            f"{leader} is the dominant assay: probe macro-F1 {f1[leader]:.3f} "
            f"(95% CI {ci[0]:.3f}-{ci[1]:.3f}), and even its lower bound beats every other assay."
        )
    elif others:
        text.append(
            f"{leader} has the highest probe macro-F1 ({f1[leader]:.3f}, 95% CI "
            f"{ci[0]:.3f}-{ci[1]:.3f}) but is not reliably dominant: its interval overlaps "
            "another assay's estimate."
        )
    else:
        text.append(f"Only one assay ({leader}) could be probed: macro-F1 {f1[leader]:.3f}.")
    for m in weak:
        teachers = [e.teacher for e in plan if e.student == m and e.enabled]
        kd = (
            f"distillation from {', '.join(teachers)} is planned"
            if teachers
            else "no distillation teacher qualifies"
        )
        text.append(
            f"{m} is weak but informative (macro-F1 {f1[m]:.3f}, I(X;Y) "
            f"{probed[m]['mi_label_bits']:.3f} bits, lower CI {mi_lo[m]:.3f}): a balancing "
            f"candidate; {kd}."
        )
    for m in uninf:
        text.append(
            f"{m} carries no reliable label information (macro-F1 {f1[m]:.3f}, within the "
            f"shuffled-label range up to {null95[m]:.3f}; I(X;Y) lower CI "
            f"{mi_lo[m]:.3f} bits): balmm will not force it."
        )
    shap_sorted = sorted(shapley_values.items(), key=lambda kv: -kv[1])
    if shap_sorted:
        text.append(
            "Shapley contributions to macro-F1: "
            + ", ".join(f"{m} {v:+.3f}" for m, v in shap_sorted)
            + "."
        )
    rel = "does not beat" if dominated else "beats"
    text.append(
        f"Concatenating all assays gives macro-F1 {concat_f1:.3f}, which {rel} the best "
        f"single assay ({f1[leader]:.3f})."
    )
    ratio = redundancy.get("ratio_sum_to_all")
    if ratio is not None and ratio == ratio:  # not NaN
        view = (
            "largely redundant (they tell the probe the same thing)"
            if ratio > 1.2
            else "complementary (together they carry more than the sum)"
            if ratio < 0.8
            else "neither strongly redundant nor strongly complementary"
        )
        text.append(
            f"Label information: all assays together {redundancy['mi_all_label_bits']:.3f} bits "
            f"vs {redundancy['sum_mi_label_bits']:.3f} bits summed over assays: {view}."
        )
    benefit_text = {
        "high": "Expected benefit of balancing: high — weak assays carry label information "
        "that joint training currently fails to add.",
        "moderate": "Expected benefit of balancing: moderate — weak assays are informative "
        "and the concatenation already gains from them.",
        "low": "Expected benefit of balancing: low — no assay besides the leader carries "
        "reliable label information.",
    }[benefit]
    text.append(benefit_text)

    warnings = list(extra_warnings or [])
    counts = dataset["train_class_counts"]
    for c, n in counts.items():
        if n < TINY_CLASS:
            warnings.append(
                f"class {c!r} has only {n} training samples: its F1 and the MI estimates are "
                "unreliable"
            )
        elif n < LOW_PER_CLASS:
            warnings.append(
                f"class {c!r} has {n} training samples (< {LOW_PER_CLASS}): intervals are wide"
            )
    for m, e in modalities.items():
        if e["coverage"] < LOW_COVERAGE:
            warnings.append(f"{m} is measured in only {e['coverage']:.0%} of samples")
        if e["missing_fraction"] > HIGH_MISSING:
            warnings.append(f"{m} has {e['missing_fraction']:.0%} missing values")
        if e["outlier_fraction"] > HIGH_OUTLIERS:
            warnings.append(
                f"{m}: {e['outlier_fraction']:.0%} of samples are outliers in PCA space"
            )
        if e.get("near_constant_fraction", 0) > 0.5:
            warnings.append(f"{m}: {e['near_constant_fraction']:.0%} of features are ~constant")
    return {
        "leader": leader,
        "dominant": leader if reliable and others else None,
        "weak_informative": weak,
        "uninformative": uninf,
        "expected_benefit": benefit,
        "concatenation_dominated": bool(dominated),
        "text": " ".join(text),
        "sentences": text,
        "warnings": warnings,
    }
