"""The out-of-fold (OOF) stacker: a fusion head that learns how far to trust each assay.

A regularised multinomial logistic regression on per-assay **out-of-fold** logits
(scikit-learn's ``LogisticRegressionCV``, L2, strength ``C`` chosen by stratified inner
cross-validation on log-loss). Fitted on honest predictions, it cannot over-trust the
assay that overfits most, as a fusion head fitted on in-sample logits does.

Features, per assay ``m`` (in the order of the ``logits`` dict):

* the centred logits ``l - mean_c(l)`` (equal to the centred log-probabilities, so a
  head's overall offset does not matter), divided by one scale per assay (their RMS over
  the training rows that have ``m``), so every assay enters on the same footing and
  the L2 penalty means the same thing for each; rows without ``m`` get 0 ("no evidence");
* a presence indicator (1 when the row has ``m``), so a missingness pattern may shift
  the prediction; when ``m`` is never missing in training it is collinear with the
  unpenalised intercept and its coefficient is 0.

A sample with any subset of assays is predicted from the assays it has: an absent
assay's features are 0 whatever its logits hold (``stack_missing = "zero-fill"``;
:mod:`balmm.training.stack_patterns` fits a stacker per missingness pattern instead).

**Per-assay penalties.** ``penalties={m: p}`` multiplies the L2 penalty on assay
``m``'s coefficients by ``p`` (implemented by scaling its features by ``1/sqrt(p)``,
which is the same model). ``p > 1`` trusts ``m`` less unless the data insist, ``p < 1``
more; ``p = inf`` drops it. Stage-2 weights ``w_m`` may enter as ``p = 1 / w_m``.

Interface::

    st = Stacker(penalties=None, Cs=DEFAULT_CS, cv=5, seed=0).fit(logits, present, y)
    proba = st.predict_proba(logits, present)   # (n, n_classes)
    st.C_                                       # the C chosen by inner CV
    st.trust_                                   # {assay: coefficient norm}, for reports
    Stacker.from_dict(st.to_dict())             # JSON-safe state, no pickle

``logits[m]`` is an ``(n, n_classes)`` array (any value, e.g. NaN, where absent),
``present[m]`` a boolean ``(n,)`` array (``None``: every assay present everywhere),
``y`` integer class codes ``0..n_classes-1``. Deterministic given ``seed`` (the inner
folds; lbfgs itself is deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_CS: tuple[float, ...] = tuple(np.logspace(-3, 2, 11).tolist())
_MAX_ITER = 2000


def _present_masks(
    logits: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None, n: int
) -> dict[str, np.ndarray]:
    masks = {}
    for m in logits:
        mask = np.ones(n, dtype=bool) if present is None or m not in present else present[m]
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"present[{m!r}] must have shape ({n},), got {mask.shape}")
        masks[m] = mask
    return masks


def _n_rows(logits: Mapping[str, np.ndarray]) -> int:
    if not logits:
        raise ValueError("the stacker needs the logits of at least one assay")
    sizes = {m: np.shape(v)[0] for m, v in logits.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every assay's logits need the same rows: {sizes}")
    return next(iter(sizes.values()))


def _centred(logits: np.ndarray, mask: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != n_classes:
        raise ValueError(f"logits[{name!r}] must be (n, {n_classes}), got {z.shape}")
    z = np.where(mask[:, None], z, 0.0)
    if not np.isfinite(z[mask]).all():
        raise ValueError(f"logits[{name!r}] are not finite on rows where the assay is present")
    return np.where(mask[:, None], z - z.mean(axis=1, keepdims=True), 0.0)


class Stacker:
    """Multinomial L2 logistic regression on per-assay out-of-fold logits (see module doc)."""

    def __init__(
        self,
        penalties: Mapping[str, float] | None = None,
        Cs: Sequence[float] = DEFAULT_CS,  # noqa: N803 (scikit-learn's name)
        cv: int = 5,
        seed: int = 0,
    ) -> None:
        self.penalties = dict(penalties or {})
        for m, p in self.penalties.items():
            if not (p > 0):
                raise ValueError(f"the penalty of {m!r} must be > 0 (inf drops it), got {p}")
        self.Cs = [float(c) for c in Cs]
        self.cv = int(cv)
        self.seed = int(seed)

    # ------------------------------------------------------------------ features

    def _features(
        self, logits: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None
    ) -> np.ndarray:
        missing = [m for m in self.assays_ if m not in logits]
        if missing:
            raise ValueError(f"the stacker needs the logits of {', '.join(map(repr, missing))}")
        n = _n_rows({m: logits[m] for m in self.assays_})
        masks = _present_masks({m: logits[m] for m in self.assays_}, present, n)
        blocks, flags = [], []
        for m in self.assays_:
            z = _centred(logits[m], masks[m], self.n_classes_, m)
            blocks.append(z * self.factor_[m])
            flags.append(masks[m].astype(np.float64) * (self.factor_[m] > 0))
        return np.hstack([*blocks, np.column_stack(flags)])

    # ------------------------------------------------------------------ fit / predict

    def fit(
        self,
        logits: Mapping[str, np.ndarray],
        present: Mapping[str, np.ndarray] | None,
        y: np.ndarray,
    ) -> Stacker:
        """Fit on out-of-fold ``logits`` of the training rows; ``C`` by inner CV (log-loss)."""
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        y = np.asarray(y, dtype=np.int64)
        n = _n_rows(logits)
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},), got {y.shape}")
        self.assays_ = list(logits)
        self.n_classes_ = int(np.shape(next(iter(logits.values())))[1])
        if y.min() < 0 or y.max() >= self.n_classes_:
            raise ValueError(f"y must hold class codes 0..{self.n_classes_ - 1}")
        masks = _present_masks(logits, present, n)
        self.factor_: dict[str, float] = {}
        for m in self.assays_:
            z = _centred(logits[m], masks[m], self.n_classes_, m)[masks[m]]
            rms = float(np.sqrt(np.mean(z**2))) if z.size else 0.0
            p = float(self.penalties.get(m, 1.0))
            # An assay with constant logits (or none present) carries nothing: factor 0.
            self.factor_[m] = 0.0 if rms == 0 or math.isinf(p) else 1.0 / (rms * math.sqrt(p))
        x = self._features(logits, present)
        counts = np.bincount(y, minlength=self.n_classes_)
        min_count = int(counts[counts > 0].min())
        folds = min(self.cv, min_count)
        if (counts > 0).sum() < 2:
            raise ValueError("the stacker needs at least 2 classes among the training rows")
        if folds < 2:  # a class with one sample: no stratified inner CV possible
            model: Any = LogisticRegression(C=1.0, max_iter=_MAX_ITER)
            model.fit(x, y)
            self.C_ = 1.0
        else:
            model = LogisticRegressionCV(
                Cs=self.Cs,
                l1_ratios=(0.0,),
                cv=StratifiedKFold(folds, shuffle=True, random_state=self.seed),
                scoring="neg_log_loss",
                max_iter=_MAX_ITER,
                use_legacy_attributes=False,
            )
            model.fit(x, y)
            self.C_ = float(model.C_)
        self.classes_ = np.asarray(model.classes_, dtype=np.int64)
        self.coef_ = np.asarray(model.coef_, dtype=np.float64)
        self.intercept_ = np.asarray(model.intercept_, dtype=np.float64)
        return self

    def decision_function(
        self, logits: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Fused logits ``(n, n_classes)`` (log-probabilities up to a per-row constant)."""
        x = self._features(logits, present)
        scores = x @ self.coef_.T + self.intercept_
        if len(self.classes_) == 2:  # scikit-learn's binary model: one score for class 1
            scores = np.hstack([np.zeros_like(scores), scores])
        out = np.full((len(x), self.n_classes_), -np.inf)
        out[:, self.classes_] = scores
        return out

    def predict_proba(
        self, logits: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``; 0 for a class absent from training."""
        from scipy.special import softmax

        return softmax(self.decision_function(logits, present), axis=1)

    @property
    def trust_(self) -> dict[str, float]:
        """Per assay, the norm of its coefficients on its standardised centred logits
        (penalty scaling included): 0 for an assay the stack ignores."""
        d = self.n_classes_
        out = {}
        for i, m in enumerate(self.assays_):
            # feature = centred / (rms * sqrt(p)): per standardised unit the weight is
            # coef / sqrt(p)
            p = float(self.penalties.get(m, 1.0))
            block = self.coef_[:, i * d : (i + 1) * d]
            off = self.factor_[m] == 0
            out[m] = 0.0 if off else float(np.linalg.norm(block)) / math.sqrt(p)
        return out

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fitted state (floats round-trip exactly through ``json``)."""
        return {
            "penalties": {m: float(p) for m, p in self.penalties.items()},
            "Cs": list(self.Cs),
            "cv": self.cv,
            "seed": self.seed,
            "assays": list(self.assays_),
            "n_classes": self.n_classes_,
            "factor": {m: float(f) for m, f in self.factor_.items()},
            "C": self.C_,
            "classes": self.classes_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_.tolist(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Stacker:
        """Rebuild a fitted stacker from :meth:`to_dict` output."""
        st = cls(penalties=state["penalties"], Cs=state["Cs"], cv=state["cv"], seed=state["seed"])
        st.assays_ = list(state["assays"])
        st.n_classes_ = int(state["n_classes"])
        st.factor_ = {m: float(state["factor"][m]) for m in st.assays_}
        st.C_ = float(state["C"])
        st.classes_ = np.asarray(state["classes"], dtype=np.int64)
        st.coef_ = np.asarray(state["coef"], dtype=np.float64)
        st.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        n_feat = len(st.assays_) * (st.n_classes_ + 1)
        if st.coef_.ndim != 2 or st.coef_.shape[1] != n_feat:
            raise ValueError(f"stacker state: coef must have {n_feat} columns")
        return st
