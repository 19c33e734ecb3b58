"""The OOF stacker against generated logits whose informativeness is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from balmm.training.stacking import Stacker


def _logits(n: int, seed: int, signals: dict[str, float], n_classes: int = 3):
    """Per-assay logits: class one-hot * signal + independent unit noise per assay."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    onehot = np.eye(n_classes)[y]
    logits = {m: s * onehot + rng.normal(size=(n, n_classes)) for m, s in signals.items()}
    return logits, y


def _accuracy(st: Stacker, logits, y, present=None) -> float:
    return float((st.predict_proba(logits, present).argmax(1) == y).mean())


def test_pure_noise_assay_gets_almost_no_trust():
    logits, y = _logits(600, 0, {"info": 2.0, "noise": 0.0})
    st = Stacker(seed=0).fit(logits, None, y)
    assert st.trust_["noise"] < 0.1 * st.trust_["info"]
    # and it does not cost the stack anything on held-out data
    te, yte = _logits(2000, 1, {"info": 2.0, "noise": 0.0})
    alone = Stacker(seed=0).fit({"info": logits["info"]}, None, y)
    assert _accuracy(st, te, yte) >= _accuracy(alone, {"info": te["info"]}, yte) - 0.01


def test_two_independent_informative_assays_beat_each_alone():
    signals = {"a": 1.2, "b": 1.0}
    tr, y = _logits(500, 2, signals)
    te, yte = _logits(3000, 3, signals)
    both = _accuracy(Stacker(seed=0).fit(tr, None, y), te, yte)
    for m in signals:
        alone = _accuracy(Stacker(seed=0).fit({m: tr[m]}, None, y), {m: te[m]}, yte)
        assert both > alone + 0.03, (m, both, alone)


def test_sample_missing_an_assay_is_predicted_from_the_others():
    signals = {"a": 2.0, "b": 2.0}
    tr, y = _logits(600, 4, signals)
    present = {"a": np.ones(600, bool), "b": np.arange(600) % 4 != 0}  # b missing in 1/4
    st = Stacker(seed=0).fit(tr, present, y)
    te, yte = _logits(2000, 5, signals)
    no_b = {"a": np.ones(2000, bool), "b": np.zeros(2000, bool)}
    p = st.predict_proba(te, no_b)
    # whatever the absent assay's logits hold, they are ignored
    garbage = {"a": te["a"], "b": np.full_like(te["b"], np.nan)}
    np.testing.assert_array_equal(p, st.predict_proba(garbage, no_b))
    alone = Stacker(seed=0).fit({"a": tr["a"]}, None, y)
    acc_alone = _accuracy(alone, {"a": te["a"]}, yte)
    assert abs(float((p.argmax(1) == yte).mean()) - acc_alone) < 0.02
    assert _accuracy(st, te, yte) > acc_alone + 0.05  # with b present it helps


def test_c_is_chosen_by_inner_cv_on_the_training_rows_only():
    tr, y = _logits(300, 6, {"a": 0.5, "b": 0.3})
    st = Stacker(seed=0).fit(tr, None, y)
    assert st.C_ in st.Cs
    # a weak signal in few rows is regularised harder than a strong one in many
    tr2, y2 = _logits(2000, 6, {"a": 3.0, "b": 3.0})
    assert Stacker(seed=0).fit(tr2, None, y2).C_ > st.C_
    # the fit reads only what it is given: appending evaluation rows to predict changes nothing
    again = Stacker(seed=0).fit(tr, None, y)
    assert again.to_dict() == st.to_dict()


def test_penalty_lowers_an_assays_trust_and_inf_drops_it():
    tr, y = _logits(400, 7, {"a": 1.5, "b": 1.5})
    # at a fixed C (inner CV would answer a global penalty with a larger C)
    base = Stacker(Cs=[0.05], seed=0).fit(tr, None, y)
    pen = Stacker(penalties={"b": 100.0}, Cs=[0.05], seed=0).fit(tr, None, y)
    assert pen.trust_["b"] < 0.2 * base.trust_["b"]
    assert pen.trust_["a"] > base.trust_["a"]  # a takes over what b no longer explains
    dropped = Stacker(penalties={"b": float("inf")}, seed=0).fit(tr, None, y)
    assert dropped.trust_["b"] == 0.0
    with pytest.raises(ValueError, match="penalty"):
        Stacker(penalties={"b": 0.0})


def test_state_round_trips_through_json_and_is_deterministic():
    tr, y = _logits(300, 8, {"a": 1.0, "b": 0.5}, n_classes=2)
    st = Stacker(seed=3).fit(tr, None, y)
    back = Stacker.from_dict(json.loads(json.dumps(st.to_dict())))
    te, _ = _logits(50, 9, {"a": 1.0, "b": 0.5}, n_classes=2)
    np.testing.assert_array_equal(st.predict_proba(te), back.predict_proba(te))
    assert Stacker(seed=3).fit(tr, None, y).to_dict() == st.to_dict()
    assert st.predict_proba(te).shape == (50, 2)


def test_class_absent_from_training_gets_probability_zero():
    tr, y = _logits(200, 10, {"a": 2.0}, n_classes=3)
    keep = y < 2
    st = Stacker(seed=0).fit({"a": tr["a"][keep]}, None, y[keep])
    p = st.predict_proba({"a": tr["a"][:5]})
    assert p.shape == (5, 3) and np.all(p[:, 2] == 0)
    np.testing.assert_allclose(p.sum(1), 1.0)
