"""Cross-modal distillation plan from the Cross-modal Complementarity Hypothesis.

For a teacher modality ``t`` and a student ``s`` the CCH gap is

    gap(t, s) = I(Z_t; Z_s) - I(Z_s; Y)      (bits)

and distillation t -> s is expected to help only when the gap is positive and
the teacher is the stronger modality. The plan is *quality-aware*: it decides
on the lower ends of the intervals, so an assay that looks strong or related
only by luck (few samples, noisy measurements, wide intervals) is never made a
teacher:

* ``gap_lo = I_lo(Z_t; Z_s) - I_hi(Z_s; Y)`` where ``I_hi`` is the mirror image
  of the given lower end (``2 * point - lower``; the callers supply symmetric-ish
  bootstrap intervals), and the edge needs ``gap_lo > 0``;
* the teacher is stronger when its macro-F1 *lower* CI exceeds the student's
  macro-F1 *point* estimate;
* the teacher must itself carry label information (label-MI lower end > 0);
* so must the student: if its features carry no label information, no function of
  them can predict the label, so distillation has nothing to transfer into (this is
  also balmm train's rule for leaving a modality out of the fusion).

A student with several enabled teachers distils from all of them, weighted
in proportion to their gaps (weights of one student's enabled edges sum to 1).
Every edge, enabled or not, carries a reason string; ``balmm train`` consumes
this plan as it is and writes it into its outputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class KDEdge:
    """One ordered (teacher -> student) pair of the distillation plan."""

    teacher: str
    student: str
    gap_bits: float  # I(Z_t; Z_s) - I(Z_s; Y), point estimates
    gap_lo_bits: float  # conservative lower end (see module docstring)
    enabled: bool
    reason: str
    weight: float  # share of this teacher in the student's KD loss (0 when disabled)

    def to_dict(self) -> dict:
        return asdict(self)


def pair_lookup(
    pair_mi: dict[tuple[str, str], tuple[float, float]], a: str, b: str
) -> tuple[float, float] | None:
    if (a, b) in pair_mi:
        return pair_mi[(a, b)]
    return pair_mi.get((b, a))


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def distillation_plan(
    strength: dict[str, tuple[float, float]],
    label_mi: dict[str, tuple[float, float]],
    pair_mi: dict[tuple[str, str], tuple[float, float]],
) -> list[KDEdge]:
    """The distillation plan over every ordered pair of modalities.

    Args:
        strength: modality -> (validation macro-F1, lower end of its CI).
        label_mi: modality -> (I(X_m; Y) bits, lower end of its CI).
        pair_mi: (a, b) -> (I(Z_a; Z_b) bits, lower end of its CI); either order
            of a pair may be given.

    Returns:
        One :class:`KDEdge` per ordered pair (teacher != student), in the order
        of ``strength``'s keys.
    """
    names = list(strength)
    edges: list[KDEdge] = []
    for s in names:
        s_f1 = strength[s][0]
        s_mi, s_mi_lo = label_mi.get(s, (float("nan"), float("nan")))
        s_mi_hi = 2 * s_mi - s_mi_lo if _finite(s_mi_lo) else s_mi
        for t in names:
            if t == s:
                continue
            t_f1, t_f1_lo = strength[t]
            t_mi, t_mi_lo = label_mi.get(t, (float("nan"), float("nan")))
            pm = pair_lookup(pair_mi, t, s)
            if pm is None or not _finite(pm[0]) or not _finite(s_mi):
                edges.append(
                    KDEdge(
                        t,
                        s,
                        float("nan"),
                        float("nan"),
                        False,
                        "disabled: no estimate (too few samples measured in both "
                        "modalities, or no label information estimate)",
                        0.0,
                    )
                )
                continue
            mi_ts, mi_ts_lo = pm
            gap = mi_ts - s_mi
            gap_lo = (mi_ts_lo if _finite(mi_ts_lo) else mi_ts) - s_mi_hi
            reasons = []
            if not gap_lo > 0:
                reasons.append(
                    f"gap lower end {gap_lo:+.3f} bits <= 0 (I({t};{s})={mi_ts:.3f}, "
                    f"I({s};Y)={s_mi:.3f})"
                )
            if not (_finite(t_f1_lo) and t_f1_lo > s_f1):
                reasons.append(
                    f"teacher not reliably stronger (macro-F1 lower CI {t_f1_lo:.3f} "
                    f"<= student macro-F1 {s_f1:.3f})"
                )
            t_mi_lo_ok = _finite(t_mi_lo) and t_mi_lo > 0
            if not t_mi_lo_ok:
                reasons.append(
                    f"teacher carries no reliable label information (lower CI {t_mi_lo:.3f} bits)"
                )
            if not (_finite(s_mi_lo) and s_mi_lo > 0):
                reasons.append(
                    f"student carries no reliable label information (lower CI {s_mi_lo:.3f} "
                    "bits): nothing for distillation to transfer into"
                )
            enabled = not reasons
            reason = (
                f"enabled: gap {gap:+.3f} bits (lower {gap_lo:+.3f}) > 0 and teacher "
                f"macro-F1 lower CI {t_f1_lo:.3f} > student {s_f1:.3f}"
                if enabled
                else "disabled: " + "; ".join(reasons)
            )
            edges.append(KDEdge(t, s, float(gap), float(gap_lo), enabled, reason, 0.0))
    # Several teachers per student: weight by gap (the point estimate; all enabled
    # edges have a positive lower end, so the gaps are positive too).
    for s in names:
        mine = [e for e in edges if e.student == s and e.enabled]
        total = sum(max(e.gap_bits, 0.0) for e in mine)
        for e in mine:
            e.weight = max(e.gap_bits, 0.0) / total if total > 0 else 1.0 / len(mine)
    return edges


def teachers_of(plan: list[KDEdge], student: str) -> list[tuple[str, float]]:
    """The enabled teachers of ``student`` as (teacher, weight), highest weight first."""
    out = [(e.teacher, e.weight) for e in plan if e.student == student and e.enabled]
    return sorted(out, key=lambda tw: -tw[1])
