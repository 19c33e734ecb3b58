"""Missingness-pattern stackers (``stack_missing = "pattern"``) against a known answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from balmm.data.simulate import make_specs, simulate
from balmm.errors import InputError
from balmm.model.fusion import StackedFusion
from balmm.training.fit import train
from balmm.training.stack_patterns import MIN_ROWS, fit_pattern, make_source, prepare
from balmm.training.stacking import Stacker

FAST = dict(pretrain_epochs=8, pretrain_patience=0, kd_epochs=4, epochs=8, patience=0,
            n_boot=20, hidden=32, embed_dim=16, lr=0.01, fusion_head="stack")  # fmt: skip

# Two redundant assays: x_m = mu * s + e + n_m (s = +-1 by class, e shared noise with sd
# SD_E, n_m own noise with sd SD_N). Given both, the true log-odds are
# 2 mu (x_a + x_b) / (2 SD_E^2 + SD_N^2); given a alone, 2 mu x_a / (SD_E^2 + SD_N^2):
# a's coefficient should almost double when b is missing.
MU, SD_E, SD_N = 1.0, 1.0, 0.5
SLOPE_ALONE = 2 * MU / (SD_E**2 + SD_N**2)  # 1.6
SLOPE_JOINT = 2 * MU / (2 * SD_E**2 + SD_N**2)  # 0.89


def _redundant(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    shared = MU * (2 * y - 1) + rng.normal(0, SD_E, n)
    x = {m: shared + rng.normal(0, SD_N, n) for m in ("a", "b")}
    # two-class "logits" whose centred form is +-x/2: log-odds x
    return {m: np.column_stack([np.zeros(n), v]) for m, v in x.items()}, x, y


def _log_odds(proba: np.ndarray) -> np.ndarray:
    return np.log(proba[:, 1] / proba[:, 0])


def test_pattern_stacker_recovers_the_coefficient_of_the_assay_left():
    logits, _, y = _redundant(1200, 0)
    present = {"a": np.ones(1200, bool), "b": np.arange(1200) % 10 != 0}  # b in 90%
    zero = Stacker(seed=0).fit(logits, present, y)
    source = make_source(["a", "b"], logits, present, y, seed=0, cv=5)
    st, info = fit_pattern(source, (True, False))
    assert info == {"assays": "a", "n_train": 1200, "stacker": "pattern", "C": st.C_}

    test, x, yt = _redundant(4000, 1)
    no_b = {"a": np.ones(4000, bool), "b": np.zeros(4000, bool)}
    slope_zero = np.polyfit(x["a"], _log_odds(zero.predict_proba(test, no_b)), 1)[0]
    slope_pattern = np.polyfit(x["a"], _log_odds(st.predict_proba({"a": test["a"]})), 1)[0]
    assert slope_pattern == pytest.approx(SLOPE_ALONE, rel=0.1)
    # zero-fill: one coefficient for both kinds of rows, pulled towards the joint slope by
    # the 90% that have b, so far too small on rows without b
    assert 0.9 * SLOPE_JOINT < slope_zero < 0.8 * SLOPE_ALONE

    def log_loss(p):
        return float(-np.log(p[np.arange(len(yt)), yt]).mean())

    assert log_loss(st.predict_proba({"a": test["a"]})) < log_loss(
        zero.predict_proba(test, no_b)) - 0.01  # fmt: skip


def test_torch_stack_predicts_each_pattern_with_its_own_stacker():
    logits, _, y = _redundant(600, 2)
    present = {"a": np.arange(600) % 7 != 0, "b": np.arange(600) % 5 != 0}
    zero = Stacker(seed=0).fit(logits, present, y)
    stack = StackedFusion(["a", "b"], 2)
    stack.load_stacker(zero.to_dict(), ["a", "b"])
    stack.source = make_source(["a", "b"], logits, present, y, seed=0, cv=5)
    test, _, _ = _redundant(300, 3)
    masks = {"a": torch.arange(300) % 3 != 0, "b": torch.arange(300) % 4 != 0}
    prepare(stack, masks)
    assert set(stack.patterns) == {(True, True), (True, False), (False, True), (False, False)}
    assert stack.patterns[(False, False)] is None  # no assay: the zero-fill intercept
    fused = stack([torch.as_tensor(test[m], dtype=torch.float32) for m in ("a", "b")],
                  [masks["a"], masks["b"]])  # fmt: skip
    got = torch.softmax(fused, 1).numpy()
    mk = {m: v.numpy() for m, v in masks.items()}
    for key in stack.patterns:
        rows = (mk["a"] == key[0]) & (mk["b"] == key[1])
        st, _ = fit_pattern(stack.source, key)
        if st is None:
            want = zero.predict_proba({m: test[m][rows] for m in test},
                                      {m: mk[m][rows] for m in mk})  # fmt: skip
        else:
            want = st.predict_proba(
                {m: test[m][rows] for m, on in zip("ab", key, strict=True) if on}
            )
        np.testing.assert_allclose(got[rows], want, rtol=1e-4, atol=1e-5)


def test_patterns_without_enough_rows_or_classes_fall_back_to_zero_fill():
    logits, _, y = _redundant(200, 4)
    few = np.zeros(200, bool)
    few[: MIN_ROWS - 1] = True
    one_class = y == 1
    for b_rows, why in ((few, "fewer than"), (one_class, "no training row")):
        source = make_source(["a", "b"], logits, {"a": ~b_rows, "b": b_rows}, y, 0, 5)
        st, info = fit_pattern(source, (False, True))
        assert st is None and info["stacker"] == "zero-fill" and info["why"].startswith(why)
    # every training row has every assay: the full pattern is the zero-fill stacker itself
    full = make_source(["a", "b"], logits, {"a": np.ones(200, bool), "b": np.ones(200, bool)},
                       y, 0, 5)  # fmt: skip
    assert fit_pattern(full, (True, True))[0] is None


def _without_in_test(data, m: str):
    """``data`` with modality ``m`` measured in no test sample (as BRCA's protein)."""
    test = data.obs.index[data.obs["split"] == "test"]
    ad_m = data.mods[m]
    data.mods[m] = ad_m[~ad_m.obs_names.isin(test)].copy()
    return data


def test_a_pattern_no_training_sample_has_is_predicted_the_same_by_the_bundle(tmp_path):
    """Test samples lack an assay that every training sample has: training-time evaluation
    fits their pattern's stacker, and predict, from the bundle's stored training rows,
    fits the same one."""
    from balmm.predict import predict, predict_result

    specs = make_specs(["strong", "weak"], n_features=[20, 20], signal=[1.5, 1.5],
                       n_informative=[8, 8], shared=[0.5, 0.5])  # fmt: skip
    data = _without_in_test(simulate(n_samples=240, n_classes=2, modalities=specs, seed=5),
                            "weak")  # fmt: skip
    res = train(data, seed=0, out=tmp_path / "run", **FAST)
    head = res.metrics["protocol"]["decisions"]["fusion_head"]
    assert head["missing"] == "pattern"
    by_assays = {p["assays"]: p for p in head["patterns"]}
    assert by_assays["strong"]["stacker"] == "pattern"  # the test samples' pattern
    assert by_assays["strong;weak"]["stacker"] == "zero-fill"  # no training row lacks one
    assert (tmp_path / "run" / "model" / "stack.safetensors").exists()
    pred = predict_result(tmp_path / "run", data)
    assert {p["assays"]: p["stacker"] for p in pred.metrics["stack_patterns"]} == {
        "strong;weak": "zero-fill", "strong": "pattern"}  # fmt: skip
    pred = pred.predictions
    cols = [c for c in res.predictions if c.startswith("proba_")]
    mine = res.predictions.set_index("sample")[cols]
    again = pred.set_index("sample").loc[mine.index, cols]
    np.testing.assert_allclose(again.to_numpy(), mine.to_numpy(), rtol=1e-5, atol=1e-6)

    # a rerun writes the same bundle, byte for byte
    train(data, seed=0, out=tmp_path / "again", **FAST)
    for name in ("stack.safetensors", "weights.safetensors", "model.json"):
        assert (tmp_path / "run" / "model" / name).read_bytes() == (
            tmp_path / "again" / "model" / name).read_bytes(), name  # fmt: skip

    meta_path = tmp_path / "again" / "model" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["stack_source"]["assays"] = ["protein"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="stack_source.assays"):
        predict(tmp_path / "again", data)
    (tmp_path / "run" / "model" / "stack.safetensors").write_bytes(b"damaged")
    with pytest.raises(InputError, match="stack.safetensors"):
        predict(tmp_path / "run", data)
