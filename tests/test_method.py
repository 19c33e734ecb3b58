"""The method's decisions: cross-fitting without leakage, the stage-2 weight rule with
its intermodal term, and distillation that is kept only when it helps out of fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from balmm.config import TrainConfig
from balmm.data.simulate import make_specs, simulate
from balmm.progress import NULL_PROGRESS
from balmm.training.checkpoint import Checkpointer
from balmm.training.crossfit import crossfit_alone
from balmm.training.fit import train
from balmm.training.fold_sets import fold_assignment
from balmm.training.intermodal import complementarity
from balmm.training.oof_curves import choose_decay
from balmm.training.tensors import Split
from datagen import two_assay_split

FAST = dict(pretrain_epochs=8, pretrain_patience=0, kd_epochs=4, epochs=8, patience=0,
            n_boot=20, hidden=32, embed_dim=16, lr=0.01)  # fmt: skip


def test_crossfit_fold_never_reads_its_held_out_rows():
    """Poisoning the labels of fold 0's held-out rows must leave fold 0's model, and so its
    out-of-fold predictions, bit-for-bit unchanged (and must change the other folds')."""
    rng = np.random.default_rng(0)
    train_split = two_assay_split(rng)
    y = train_split.y.numpy()
    folds = fold_assignment(y, 4, seed=0)
    cfg = TrainConfig(**{**FAST, "folds": 4})
    off = Checkpointer(None, "", 0)
    clean = crossfit_alone(["a", "b"], {"a": 10, "b": 10}, 2, train_split, folds, cfg,
                           NULL_PROGRESS, off)  # fmt: skip
    poisoned_y = y.copy()
    poisoned_y[folds == 0] = 1 - poisoned_y[folds == 0]
    poisoned = Split(train_split.ids, train_split.X, train_split.M, torch.as_tensor(poisoned_y))
    dirty = crossfit_alone(["a", "b"], {"a": 10, "b": 10}, 2, poisoned, folds, cfg,
                           NULL_PROGRESS, off)  # fmt: skip
    for m in ("a", "b"):
        held = folds == 0
        np.testing.assert_array_equal(clean.logits[m][held], dirty.logits[m][held])
        np.testing.assert_array_equal(clean.z[m][held], dirty.z[m][held])
        assert not np.array_equal(clean.logits[m][~held], dirty.logits[m][~held])


def test_decay_is_chosen_on_pooled_oof_log_loss_and_per_fold_on_the_other_folds():
    """Known answer: held-out losses per fold are (0.1, 1.0, 1.0) with decay a and
    (2.0, 0.5, 0.5) with decay b. Pooled, a wins (0.70 vs 1.00); fold 0 alone sees only
    folds 1 and 2, where b wins (0.5 vs 1.0)."""
    y_held = [np.zeros(1, dtype=int)] * 3

    def curve(losses):  # one epoch, one held-out sample per fold, true class 0
        return [np.array([[[-v, np.log1p(-np.exp(-v))]]]) for v in losses]

    traces = {1e-3: curve([0.1, 1.0, 1.0]), 10.0: curve([2.0, 0.5, 0.5])}
    (wd, ep), per_fold, pooled = choose_decay(traces, y_held)
    assert (wd, ep) == (1e-3, 1)
    assert per_fold == [(10.0, 1), (1e-3, 1), (1e-3, 1)]
    np.testing.assert_allclose(pooled, [0.7])
    # fold 0's choice never reads fold 0's own held-out curve: any change to it leaves
    # fold 0's decision as it was (and can move the others')
    traces = {1e-3: curve([5.0, 1.0, 1.0]), 10.0: curve([0.01, 0.5, 0.5])}
    (wd, _), per_fold, _ = choose_decay(traces, y_held)
    assert wd == 10.0 and per_fold[0] == (10.0, 1)
    traces = {1e-3: curve([0.01, 1.0, 1.0]), 10.0: curve([9.0, 0.5, 0.5])}
    assert choose_decay(traces, y_held)[1][0] == (10.0, 1)


def test_complementarity_separates_unique_from_redundant_information():
    rng = np.random.default_rng(1)
    n = 600
    y = rng.integers(0, 2, n)
    u = rng.normal(size=n)  # shared noise: what makes two assays redundant
    own = {
        "unique": 2.0 * y + rng.normal(size=n),  # signal the others lack
        "copy1": 2.0 * y + u + 0.1 * rng.normal(size=n),
        "copy2": 2.0 * y + u + 0.1 * rng.normal(size=n),
    }
    logits = {m: np.column_stack([-v, v]) for m, v in own.items()}
    present = {m: np.ones(n, bool) for m in own}
    comp = complementarity(logits, present, y, 2, seed=0)
    # two conditionally independent views still share some label information (H(Y) bounds
    # both), so the unique assay sits near 0; the two copies are redundant: near -1
    assert comp["copy1"]["kappa"] < -0.5 and comp["copy2"]["kappa"] < -0.5
    assert comp["unique"]["kappa"] > max(comp["copy1"]["kappa"], comp["copy2"]["kappa"]) + 0.5
    for rec in comp.values():
        assert 0 <= rec["unique"] <= rec["I"] + 1e-12


def test_weak_complementary_assay_ends_with_more_weight_than_the_dominant_one():
    # independent (complementary) signals: the weak assay lags and knows what the strong lacks
    specs = make_specs(["strong", "weak"], n_features=[30, 30], signal=[3.0, 1.8],
                       n_informative=[10, 10], shared=[0.0, 0.0])  # fmt: skip
    data = simulate(n_samples=300, n_classes=2, modalities=specs, seed=4)
    res = train(data, seed=0, **{**FAST, "epochs": 15})
    s2 = [h for h in res.history if h["stage"] == "stage2"]
    w = s2[-1]["weights"]
    assert w["weak"] > w["strong"] > 0
    comp = res.metrics["protocol"]["decisions"]["complementarity"]
    assert comp["weak"]["unique"] > 0
    assert all("weights" in h for h in s2)  # per-epoch weights in history.jsonl


@pytest.fixture(scope="module")
def cch_run():
    # the CCH case: a weaker student sharing its latent with a stronger teacher
    specs = make_specs(["strong", "weak"], n_features=[30, 30], signal=[3.0, 1.5], noise=0.5,
                       n_informative=30, shared=1.0)  # fmt: skip
    data = simulate(n_samples=300, n_classes=2, modalities=specs, seed=1)
    return train(data, seed=0, **{**FAST, "pretrain_epochs": 15, "n_boot": 30})


def test_distillation_is_kept_only_if_the_student_improves_out_of_fold(cch_run):
    res = cch_run
    enabled = [e for e in res.plan if e["enabled"]]
    assert [(e["teacher"], e["student"]) for e in enabled] == [("strong", "weak")]
    for e in enabled:
        for k in ("oof_macro_f1_before", "oof_macro_f1_after"):
            assert 0.0 <= e[k] <= 1.0
        helps = (e["oof_log_loss_after"] < e["oof_log_loss_before"]
                 and e["oof_macro_f1_after"] > e["oof_macro_f1_before"])  # fmt: skip
        assert e["accepted"] == helps
        assert res.metrics["stage1"][e["student"]]["distilled"] == e["accepted"]
    assert res.metrics["protocol"]["decisions"]["cross_fitted"]


def test_stacked_fused_head_is_fitted_out_of_fold_and_travels_in_the_bundle(tmp_path):
    specs = make_specs(["strong", "weak", "noise"], n_features=[20, 20, 10],
                       signal=[2.5, 1.8, 0.0], n_informative=[8, 8, 2],
                       shared=[0.0, 0.0, 0.0])  # fmt: skip
    data = simulate(n_samples=240, n_classes=2, modalities=specs, missing_rate=0.1, seed=2)
    res = train(data, seed=0, out=tmp_path / "run", fusion_head="stack", folds=5, **FAST)
    head = res.metrics["protocol"]["decisions"]["fusion_head"]
    assert head["kind"] == "stack" and head["C"] > 0
    assert "noise" not in head["trust"]  # left out of the fusion: not stacked
    assert res.model.stack is not None and bool(res.model.stack.active)
    # the default fold average: the same stacker on each fold model's heads
    assert res.metrics["protocol"]["decisions"]["final_model"] == {"kind": "average",
                                                                   "members": 6}  # fmt: skip
    assert all(bool(n.stack.active) for n in res.model.members)
    # predict rebuilds the stacked head from the bundle: the same fused probabilities
    _assert_predict_reproduces(res, tmp_path / "run", data)


def test_fold_average_travels_in_the_bundle(tmp_path):
    """final_model = "average" keeps the K fold joint models beside the refit one; predict
    rebuilds the same ensemble from the bundle."""
    specs = make_specs(["strong", "weak"], n_features=[20, 20], signal=[2.0, 1.5],
                       n_informative=[8, 8], shared=[0.0, 0.0])  # fmt: skip
    data = simulate(n_samples=200, n_classes=2, modalities=specs, missing_rate=0.1, seed=4)
    res = train(data, seed=0, out=tmp_path / "run", final_model="average", folds=3, **FAST)
    assert res.metrics["protocol"]["decisions"]["final_model"] == {"kind": "average",
                                                                   "members": 4}  # fmt: skip
    for m, rec in res.metrics["protocol"]["decisions"]["stage1_folds"].items():
        assert rec["rule"] == "nested" and len(rec["epochs"]) == 3, m  # nested by default
        assert all(1 <= e <= FAST["pretrain_epochs"] for e in rec["epochs"])
    assert len(res.model.members) == 3
    _assert_predict_reproduces(res, tmp_path / "run", data)


def test_stage2_epoch_count_is_chosen_on_the_folds_held_out_curves(tmp_path, monkeypatch):
    """stage2_select = "crossfit": the folds' stage 2 only records its held-out fused curves
    (the fold models are the default run's, bit for bit: the held-out rows steer nothing),
    and the refit trains for the epoch count with the lowest pooled OOF log-loss."""
    from balmm.training import oof_curves

    seen = {}

    def recording(traces, y_held):
        seen["traces"], seen["y"] = traces, y_held
        best, curve, _ = oof_curves._pooled_choices(traces, y_held)
        return best, [], curve

    specs = make_specs(["strong", "weak"], n_features=[20, 20], signal=[1.2, 0.8],
                       n_informative=[8, 8], shared=[0.0, 0.0])  # fmt: skip
    data = simulate(n_samples=200, n_classes=2, modalities=specs, seed=6)
    monkeypatch.setattr(oof_curves, "choose_epochs", recording)
    res = train(data, seed=0, out=tmp_path / "cf", folds=3, stage2_select="crossfit", **FAST)
    chosen = res.metrics["protocol"]["decisions"]["stage2_epochs"]
    assert chosen["kind"] == "crossfit"
    traces, y_held = seen["traces"], seen["y"]
    n_train = int((res.predictions["split"] != "test").sum())
    assert len(traces) == 3 and sum(len(y) for y in y_held) == n_train  # every training row
    for t, y in zip(traces, y_held, strict=True):
        assert t.shape[1:] == (len(y), 2) and np.allclose(np.exp(t).sum(-1), 1, atol=1e-4)
    # the pooled curve by hand: mean negative log-probability of the true class per epoch
    n_ep = min(len(t) for t in traces)
    curve = sum(-t[:n_ep, np.arange(len(y)), y].sum(1) for t, y in zip(traces, y_held, strict=True))
    assert chosen["epochs"] == int(np.argmin(curve)) + 1
    refit = [h for h in res.history if h.get("stage") == "stage2"]
    assert [h["epoch"] for h in refit] == list(range(1, chosen["epochs"] + 1))
    monkeypatch.undo()
    default = train(data, seed=0, out=tmp_path / "f1", folds=3, **FAST)
    for a, b in zip(res.model.members, default.model.members, strict=True):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k


def _assert_predict_reproduces(res, run, data) -> None:
    """``balmm predict`` with the run's bundle gives the run's fused probabilities."""
    from balmm.predict import predict

    pred = predict(run, data)
    cols = [c for c in res.predictions if c.startswith("proba_")]
    mine = res.predictions.set_index("sample")[cols]
    again = pred.set_index("sample").loc[mine.index, cols]
    np.testing.assert_allclose(again.to_numpy(), mine.to_numpy(), rtol=1e-5, atol=1e-6)


def test_fold_models_kept_from_the_curve_equal_fold_models_trained_again(monkeypatch, tmp_path):
    """A fold's model at the chosen epoch is taken from the epoch curve's in-memory states;
    training its member on from where the curve stopped (states too large to keep), or
    again from the start (curves restored from checkpoints after a resume), gives the same
    OOF logits and embeddings, bit for bit."""
    from balmm.training import crossfit, curves

    rng = np.random.default_rng(3)
    train_split = two_assay_split(rng)
    folds = fold_assignment(train_split.y.numpy(), 4, seed=0)
    cfg = TrainConfig(**{**FAST, "folds": 4, "pretrain_epochs": 12, "pretrain_patience": 3})
    off = Checkpointer(None, "", 0)
    args = (["a", "b"], {"a": 10, "b": 10}, 2, train_split, folds, cfg, NULL_PROGRESS, off)
    kept = crossfit_alone(*args)
    trained_on = []
    train_on = curves.BatchedFolds.train_on

    def recording(self, epochs, key):
        trained_on.append(epochs)
        train_on(self, epochs, key)

    monkeypatch.setattr(curves.BatchedFolds, "train_on", recording)
    monkeypatch.setattr(crossfit, "SNAPSHOT_MAX_BYTES", 0)
    again = crossfit_alone(*args)
    assert trained_on, "some fold model should train on past its curve's stop"
    # curves restored from checkpoints, fold models not: every fold model trained afresh
    crossfit_alone(*args[:-1], Checkpointer(tmp_path, "x", 0))
    for f in tmp_path.glob("fold*_stage1--*.done.pt"):
        f.unlink()
    trained_on.clear()
    ckpt = Checkpointer(tmp_path, "x", 0)
    resumed = crossfit_alone(*args[:-1], ckpt)
    assert {"trace:a", "trace:b"} <= set(ckpt.resumed_units) and not trained_on
    for other in (again, resumed):
        assert kept.fold_epochs == other.fold_epochs
        for m in ("a", "b"):
            np.testing.assert_array_equal(kept.logits[m], other.logits[m])
            np.testing.assert_array_equal(kept.z[m], other.z[m])


def test_crossfit_copes_with_a_fold_whose_held_out_samples_lack_a_modality():
    """Partial coverage: modality b is measured only outside fold 0, so fold 0's epoch curve
    for b is empty; the epoch counts come from the other folds and b gets no OOF logits
    where it is absent."""
    rng = np.random.default_rng(4)
    s = two_assay_split(rng)
    folds = np.arange(len(s)) % 4
    s.M["b"] = torch.as_tensor(folds != 0)
    cfg = TrainConfig(**{**FAST, "folds": 4, "eval_every": 3})
    cf = crossfit_alone(["a", "b"], {"a": 10, "b": 10}, 2, s, folds, cfg, NULL_PROGRESS,
                        Checkpointer(None, "", 0))  # fmt: skip
    assert 1 <= cf.epochs["b"] <= cfg.pretrain_epochs
    assert np.isnan(cf.logits["b"][folds == 0]).all()
    assert np.isfinite(cf.logits["b"][folds != 0]).all()
    assert np.isfinite(cf.logits["a"]).all()


@pytest.mark.parametrize(
    ("after", "lower_log_loss", "higher_f1"),
    [
        ([[0.6, 0.4], [0.4, 0.6], [0.6, 0.4]], True, True),  # all right
        ([[0.7, 0.3], [0.52, 0.48], [0.48, 0.52]], True, False),  # the same decisions
        ([[0.51, 0.49], [0.49, 0.51], [0.01, 0.99]], False, True),  # one badly wrong
    ],
)
def test_distillation_is_kept_only_if_log_loss_and_macro_f1_both_improve(
    after, lower_log_loss, higher_f1
):
    from balmm.training.distil import evidence_record

    y = np.array([0, 1, 0])
    before = np.array([[0.55, 0.45], [0.55, 0.45], [0.45, 0.55]])  # two of three wrong
    rec = evidence_record(before, np.array(after), y, 2, "oof")
    assert (rec["oof_log_loss_after"] < rec["oof_log_loss_before"]) is lower_log_loss
    assert (rec["oof_macro_f1_after"] > rec["oof_macro_f1_before"]) is higher_f1
    assert rec["accepted"] is (lower_log_loss and higher_f1)
