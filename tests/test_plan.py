"""Distillation plan: gap arithmetic, quality-aware enabling, teacher weights, reasons."""

from __future__ import annotations

import math

import pytest

from balmm.profiling.plan import KDEdge, distillation_plan, teachers_of


def edge(plan: list[KDEdge], t: str, s: str) -> KDEdge:
    return next(e for e in plan if e.teacher == t and e.student == s)


def test_strong_teacher_with_positive_gap_is_enabled() -> None:
    strength = {"mrna": (0.85, 0.80), "meth": (0.70, 0.62)}
    label_mi = {"mrna": (0.40, 0.30), "meth": (0.15, 0.10)}
    pair_mi = {("mrna", "meth"): (0.60, 0.50)}
    plan = distillation_plan(strength, label_mi, pair_mi)
    assert len(plan) == 2
    e = edge(plan, "mrna", "meth")
    assert e.gap_bits == pytest.approx(0.60 - 0.15)
    # lower end: I_lo(t;s) - I_hi(s;Y), I_hi mirrored from the lower end: 0.15 + 0.05
    assert e.gap_lo_bits == pytest.approx(0.50 - 0.20)
    assert e.enabled and e.weight == 1.0 and e.reason.startswith("enabled")
    back = edge(plan, "meth", "mrna")
    assert not back.enabled and back.weight == 0.0
    assert "not reliably stronger" in back.reason
    assert teachers_of(plan, "meth") == [("mrna", 1.0)]
    assert teachers_of(plan, "mrna") == []


def test_teacher_strong_only_by_luck_is_not_a_teacher() -> None:
    # Higher point F1, but its lower CI is below the student's point estimate.
    strength = {"noisy": (0.80, 0.60), "meth": (0.70, 0.65)}
    label_mi = {"noisy": (0.40, 0.05), "meth": (0.15, 0.10)}
    plan = distillation_plan(strength, label_mi, {("noisy", "meth"): (0.6, 0.5)})
    e = edge(plan, "noisy", "meth")
    assert not e.enabled
    assert "lower CI 0.600" in e.reason


def test_gap_lower_end_must_be_positive() -> None:
    strength = {"a": (0.9, 0.85), "b": (0.6, 0.55)}
    label_mi = {"a": (0.5, 0.4), "b": (0.3, 0.2)}
    # point gap 0.35 - 0.3 > 0 but lower end 0.25 - 0.4 < 0
    plan = distillation_plan(strength, label_mi, {("b", "a"): (0.35, 0.25)})
    e = edge(plan, "a", "b")
    assert e.gap_bits > 0 and e.gap_lo_bits < 0
    assert not e.enabled and "gap lower end" in e.reason


def test_uninformative_teacher_is_refused() -> None:
    strength = {"a": (0.9, 0.85), "b": (0.6, 0.55)}
    label_mi = {"a": (0.05, -0.02), "b": (0.01, 0.0)}
    plan = distillation_plan(strength, label_mi, {("a", "b"): (0.5, 0.4)})
    e = edge(plan, "a", "b")
    assert not e.enabled and "no reliable label information" in e.reason


def test_several_teachers_weighted_by_gap() -> None:
    strength = {"t1": (0.9, 0.85), "t2": (0.88, 0.8), "s": (0.6, 0.5)}
    label_mi = {"t1": (0.6, 0.5), "t2": (0.5, 0.4), "s": (0.1, 0.08)}
    pair_mi = {("t1", "s"): (0.5, 0.45), ("s", "t2"): (0.3, 0.25), ("t1", "t2"): (0.4, 0.3)}
    plan = distillation_plan(strength, label_mi, pair_mi)
    assert len(plan) == 6
    teachers = dict(teachers_of(plan, "s"))
    assert set(teachers) == {"t1", "t2"}
    assert teachers["t1"] == pytest.approx(0.4 / 0.6)
    assert teachers["t2"] == pytest.approx(0.2 / 0.6)
    assert teachers_of(plan, "s")[0][0] == "t1"


def test_missing_pair_estimate_is_disabled_with_reason() -> None:
    strength = {"a": (0.9, 0.85), "b": (0.6, 0.55)}
    label_mi = {"a": (0.5, 0.4), "b": (0.1, 0.05)}
    plan = distillation_plan(strength, label_mi, {})
    assert all(not e.enabled and "no estimate" in e.reason for e in plan)
    assert all(math.isnan(e.gap_bits) for e in plan)
    assert plan[0].to_dict()["teacher"] in {"a", "b"}


def test_student_without_label_information_is_not_distilled_into() -> None:
    # A pure-noise student: any function of its features is independent of the label,
    # so distillation cannot help it, however large the (possibly biased) pair MI.
    strength = {"mrna": (0.85, 0.80), "noise": (0.50, 0.40)}
    label_mi = {"mrna": (0.40, 0.30), "noise": (0.001, -0.02)}
    plan = distillation_plan(strength, label_mi, {("mrna", "noise"): (0.30, 0.20)})
    e = edge(plan, "mrna", "noise")
    assert e.gap_lo_bits > 0 and not e.enabled
    assert "student carries no reliable label information" in e.reason
    assert teachers_of(plan, "noise") == []
