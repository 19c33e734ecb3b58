"""Stage 2 on cross-fitted evidence: the refit's weight schedule read from the folds' joint
models' held-out curves, which only observe the held-out rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from balmm.config import TrainConfig
from balmm.data.simulate import make_specs, simulate
from balmm.progress import NULL_PROGRESS
from balmm.training.checkpoint import Checkpointer
from balmm.training.crossfit import crossfit_alone
from balmm.training.fit import train
from balmm.training.fold_sets import fold_assignment
from balmm.training.oof_curves import pooled_f1_schedule
from balmm.training.stage2 import train_joint
from balmm.training.tensors import Split
from datagen import two_assay_split
from test_checkpoint import Run, StopAt

FAST = dict(pretrain_epochs=8, pretrain_patience=0, kd_epochs=4, epochs=8, patience=0,
            n_boot=20, hidden=32, embed_dim=16, lr=0.01)  # fmt: skip


@pytest.fixture(scope="module")
def data():
    specs = make_specs(["strong", "weak"], n_features=[20, 20], signal=[2.0, 1.5],
                       n_informative=[8, 8], shared=[0.0, 0.0])  # fmt: skip
    return simulate(n_samples=200, n_classes=2, modalities=specs, missing_rate=0.1, seed=6)


def test_weight_schedule_is_each_heads_pooled_oof_f1_and_drives_the_weights(
    data, tmp_path, monkeypatch
):
    from balmm.training import oof_curves

    seen = {}

    def recording(traces, y_held, present, n_classes):
        seen.update(traces=traces, y=y_held, present=present)
        return pooled_f1_schedule(traces, y_held, present, n_classes)

    monkeypatch.setattr(oof_curves, "pooled_f1_schedule", recording)
    cfg = {**FAST, "folds": 3, "epochs": 12}
    res = train(data, seed=0, out=tmp_path / "cf", stage2_weights="crossfit", **cfg)
    decision = res.metrics["protocol"]["decisions"]["stage2_weights"]
    assert decision["kind"] == "crossfit"
    traces, y_held, present = seen["traces"], seen["y"], seen["present"]
    n_train = int((res.predictions["split"] != "test").sum())
    assert len(traces) == 3 and sum(len(y) for y in y_held) == n_train
    # by hand: at epoch e, every fold's held-out argmax pooled, scored with scikit-learn
    n_ep = min(len(t["fused"]) for t in traces)
    assert decision["epochs_traced"] == n_ep
    expected = []
    for e in range(n_ep):
        rec = {}
        for h in ("fused", "strong", "weak"):
            keep = [(y >= 0) & p.get(h, np.ones(len(y), bool))
                    for y, p in zip(y_held, present, strict=True)]  # fmt: skip
            truth = np.concatenate([y[k] for y, k in zip(y_held, keep, strict=True)])
            pred = np.concatenate([t[h][e][k].argmax(1) for t, k in zip(traces, keep, strict=True)])
            rec[h] = f1_score(truth, pred, average="macro", labels=[0, 1], zero_division=0)
        expected.append(rec)
    refit = [h for h in res.history if h.get("stage") == "stage2"]
    assert len(refit) == 12
    # the refit's weights follow the schedule: w <- ema w + (1 - ema) target(evidence)
    kappa = {m: v["kappa"] for m, v in res.metrics["protocol"]["decisions"]["complementarity"]
             .items()}  # fmt: skip
    c = TrainConfig(**cfg)
    gate = {m: 0.0 if m in res.metrics["imbalance"]["excluded_from_fusion"] else 1.0
            for m in ("strong", "weak")}  # fmt: skip
    assert gate == {"strong": 1.0, "weak": 1.0}, "both assays should carry label information"
    w = dict(gate)
    for h in refit:
        ev = expected[min(h["epoch"], n_ep) - 1]
        for k, v in ev.items():
            assert h["weight_evidence"][k] == pytest.approx(v, abs=1e-12)
        best = max(ev["strong"], ev["weak"])
        for m in w:
            lag = (best - ev[m]) / best
            target = 1 + c.weight_beta * lag * (1 + c.weight_gamma * kappa.get(m, 0.0))
            w[m] = c.weight_ema * w[m] + (1 - c.weight_ema) * target
            assert h["weights"][m] == pytest.approx(w[m], rel=1e-9)
        assert set(h["val_f1"]) == {"fused", "strong", "weak"}  # the carve still scored
    # the fold models are the default's, bit for bit: tracing steers nothing
    monkeypatch.undo()
    default = train(data, seed=0, out=tmp_path / "f1", **cfg)
    for a, b in zip(res.model.members, default.model.members, strict=True):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k
    assert "stage2_weights" not in default.metrics["protocol"]["decisions"]
    assert all("weight_evidence" not in h for h in default.history)


def test_schedule_holds_its_last_evidence_past_its_end():
    from balmm.training.balancers import Balancer

    bal = Balancer(["a"], TrainConfig(), {"a": (0.5, 0.2)})
    bal.schedule = [{"a": 0.5}, {"a": 0.7}]
    assert [bal.evidence_at(e)["a"] for e in (1, 2, 3, 40)] == [0.5, 0.7, 0.7, 0.7]


def test_fold_joint_model_never_reads_its_held_out_labels():
    """Fold 0's joint model traced on its held-out rows with their labels flipped is bit for
    bit the one traced with the true labels, and the one not traced at all; its trace (the
    held-out log-probabilities) is the same too: only the evidence scored from it moves."""
    rng = np.random.default_rng(0)
    train_split = two_assay_split(rng)
    y = train_split.y.numpy()
    folds = fold_assignment(y, 3, seed=0)
    cfg = TrainConfig(**{**FAST, "folds": 3})
    off = Checkpointer(None, "", 0)
    cf = crossfit_alone(["a", "b"], {"a": 10, "b": 10}, 2, train_split, folds, cfg,
                        NULL_PROGRESS, off)  # fmt: skip
    sets = cf.fold_sets[0]
    held = sets["held"]
    flipped = Split(held.ids, held.X, held.M, 1 - held.y)
    label_mi = {"a": (0.5, 0.3), "b": (0.3, 0.1)}

    def fold0(h):
        return train_joint(["a", "b"], {"a": 10, "b": 10}, 2,
                           {"fit": sets["fit"], "val": sets["val"]}, cf.fold_stage1[0],
                           label_mi, cfg, NULL_PROGRESS, off, scope="fold0/",
                           held=h)  # fmt: skip

    clean, dirty, plain = fold0(held), fold0(flipped), fold0(None)
    for other in (dirty, plain):
        for k, v in clean.model.state_dict().items():
            assert torch.equal(v, other.model.state_dict()[k]), k
    assert set(clean.trace) == {"fused", "a", "b"}
    for h, t in clean.trace.items():
        assert t.shape == (FAST["epochs"], len(held), 2)
        assert torch.equal(t, dirty.trace[h])
    y_true, y_flip = held.y.numpy(), flipped.y.numpy()
    tr = [{h: t.numpy() for h, t in clean.trace.items()}]
    pres = [{"a": np.ones(len(held), bool), "b": np.ones(len(held), bool)}]
    ev_true = pooled_f1_schedule(tr, [y_true], pres, 2)
    ev_flip = pooled_f1_schedule(tr, [y_flip], pres, 2)
    assert ev_true != ev_flip


def test_weight_schedule_without_cross_fitting_says_why(data):
    res = train(data, seed=0, folds=0, stage2_weights="crossfit", **FAST)
    decision = res.metrics["protocol"]["decisions"]["stage2_weights"]
    assert decision["kind"] == "validation" and "cross-fitting" in decision["why"]
    assert all("weight_evidence" not in h for h in res.history)


RESUMED = {"schedule": {"stage2_weights": "crossfit"}, "carve-free": {"refit_on": "train"}}


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The reference outputs of each resumed mode, trained once without interruption."""
    refs = {}
    for mode, extra in RESUMED.items():
        root = tmp_path_factory.mktemp(mode)
        train(data, seed=0, out=Run(root, root / "ckpt"), **_resume_cfg(extra))
        refs[mode] = root / "work"
    return refs


def _resume_cfg(extra: dict) -> dict:
    return {**FAST, "folds": 3, "checkpoint_every": 2, **extra}


@pytest.mark.parametrize(("mode", "key", "n"), [
    ("schedule", "fold1/stage2", 3), ("schedule", "stage2", 4),
    ("carve-free", "fold1/stage2", 3), ("carve-free", "stage1:weak", 2),
])  # fmt: skip
def test_resume_in_the_cross_fitted_modes_is_byte_identical(
    data, uninterrupted, tmp_path, mode, key, n
):
    cfg = _resume_cfg(RESUMED[mode])
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(data, seed=0, out=Run(tmp_path / "a", ckpt), progress=StopAt(key, n), **cfg)
    res = train(data, seed=0, out=Run(tmp_path / "b", ckpt), **cfg)
    assert any(u.startswith(f"{key}@") for u in res.resumed_units), res.resumed_units
    decisions = res.metrics["protocol"]["decisions"]
    assert decisions["stage2_weights"]["kind"] == "crossfit"
    for f in ("metrics.json", "predictions.csv", "history.jsonl", "model/weights.safetensors"):
        a = (tmp_path / "b" / "work" / f).read_bytes()
        assert a == (uninterrupted[mode] / f).read_bytes(), f


def test_carve_free_refit_reads_no_carve_and_reports_val_out_of_fold(data, tmp_path, monkeypatch):
    """refit_on = "train": the final models train on every training sample; no loop outside
    the folds scores a validation carve; metrics' val is the folds' OOF predictions."""
    from balmm.training import loop as loop_mod
    from balmm.training import stage2 as stage2_mod

    scored, recorded = [], {}
    score = loop_mod.TrainLoop.score

    def recording_score(self):
        scored.append(self.spec.key)
        return score(self)

    joint = stage2_mod.crossfit_joint

    def recording_joint(cf, *args, **kwargs):
        out, models = joint(cf, *args, **kwargs)
        recorded.update(oof=out, y=cf.y)
        return out, models

    monkeypatch.setattr(loop_mod.TrainLoop, "score", recording_score)
    monkeypatch.setattr(stage2_mod, "crossfit_joint", recording_joint)
    res = train(data, seed=0, out=tmp_path / "all", folds=3, refit_on="train", **FAST)
    p = res.metrics["protocol"]
    n_train = int((res.predictions["split"] != "test").sum())
    assert p["n_val"] == 0 and p["n_fit"] == n_train
    assert p["validation"].startswith("out-of-fold")
    assert p["decisions"]["refit_on"]["kind"] == "train"
    assert p["decisions"]["stage2_epochs"]["kind"] == "crossfit"
    assert p["decisions"]["stage2_weights"]["kind"] == "crossfit"
    assert set(res.predictions["split"]) == {"train", "test"}
    assert scored and all(k.startswith("fold") for k in scored), sorted(set(scored))
    # val by hand from the folds' OOF fused predictions over every training sample
    y, fused = recorded["y"], np.exp(recorded["oof"]["fused"]).argmax(1)
    want = f1_score(y, fused, average="macro", labels=[0, 1], zero_division=0)
    assert res.metrics["val"]["fused"]["macro_f1"] == pytest.approx(want, abs=1e-12)
    assert res.metrics["val"]["fused"]["accuracy"] == pytest.approx((fused == y).mean())
    refit = [h for h in res.history if h.get("stage") == "stage2"]
    assert refit and all(h["val_f1"] == h["weight_evidence"] for h in refit)
    assert all(np.isfinite(v["val_macro_f1"]) for v in res.metrics["stage1"].values())
    # every line's per-head F1 is out-of-fold evidence (stage 1: the folds' pooled curves)
    assert all(0.0 <= min(h["val_f1"].values()) <= 1.0 for h in res.history)


def test_oof_history_gives_each_line_the_folds_f1_after_the_same_epoch():
    from balmm.training.refit import oof_history

    hist = [{"stage": "stage1:a", "epoch": e} for e in (1, 2, 3)] + [{"stage": "stage2",
                                                                     "epoch": 1}]  # fmt: skip
    oof_history(hist, {"stage1:a": [0.5, 0.6]})
    assert [h.get("val_f1") for h in hist] == [{"a": 0.5}, {"a": 0.6}, {"a": 0.6}, None]


def test_carve_free_refit_falls_back_with_its_reason_without_cross_fitting(data):
    res = train(data, seed=0, folds=0, refit_on="train", **FAST)
    p = res.metrics["protocol"]
    assert (
        p["decisions"]["refit_on"]["kind"] == "fit"
        and "cross-fitting" in (p["decisions"]["refit_on"]["why"])
    )
    assert p["n_val"] > 0 and "val" in set(res.predictions["split"])


@pytest.fixture
def epoch_choices(monkeypatch):
    """The (traces, held-out labels) of every ``oof_curves.choose_epochs`` call, in order."""
    from balmm.training import oof_curves

    seen = []
    choose = oof_curves.choose_epochs

    def recording(traces, y_held):
        seen.append((traces, y_held))
        return choose(traces, y_held)

    monkeypatch.setattr(oof_curves, "choose_epochs", recording)
    return seen


def test_carve_free_students_train_the_folds_pooled_best_epoch_count(epoch_choices):
    seen = epoch_choices
    specs = make_specs(["strong", "weak"], n_features=[30, 30], signal=[3.0, 1.5], noise=0.5,
                       n_informative=30, shared=1.0)  # fmt: skip
    cch = simulate(n_samples=300, n_classes=2, modalities=specs, seed=1)
    cfg = {**FAST, "pretrain_epochs": 15, "n_boot": 30, "kd_epochs": 6, "folds": 3}
    res = train(cch, seed=0, refit_on="train", **cfg)
    planned = [e for e in res.plan if e["enabled"]]
    assert [(e["teacher"], e["student"]) for e in planned] == [("strong", "weak")]
    e = planned[0]
    traces, y_held = seen[0]  # the students' curves come first (stage 2's after)
    assert len(traces) == 3 and all(t.shape[0] == 6 for t in traces)
    assert sum(len(y) for y in y_held) == int((res.predictions["split"] != "test").sum())
    curve = sum(-t[:, np.arange(len(y)), y].sum(1) for t, y in zip(traces, y_held, strict=True))
    assert e["kd_epochs"] == int(np.argmin(curve)) + 1
    kd = [h for h in res.history if h["stage"] == "kd:weak"]
    assert len(kd) == (e["kd_epochs"] if e["accepted"] else 0)


def test_carve_free_resume_inside_a_traced_fold_distillation_is_byte_identical(tmp_path):
    specs = make_specs(["strong", "weak"], n_features=[30, 30], signal=[3.0, 1.5], noise=0.5,
                       n_informative=30, shared=1.0)  # fmt: skip
    cch = simulate(n_samples=200, n_classes=2, modalities=specs, seed=1)
    cfg = {**FAST, "pretrain_epochs": 6, "kd_epochs": 6, "epochs": 6, "folds": 3,
           "checkpoint_every": 2, "refit_on": "train"}  # fmt: skip
    ref = train(cch, seed=0, out=Run(tmp_path / "ref", tmp_path / "ref-ckpt"), **cfg)
    assert any(e["enabled"] for e in ref.plan), "the scenario must exercise distillation"
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(cch, seed=0, out=Run(tmp_path / "a", ckpt), progress=StopAt("fold1/kd:weak", 3),
              **cfg)  # fmt: skip
    res = train(cch, seed=0, out=Run(tmp_path / "b", ckpt), **cfg)
    assert any(u.startswith("fold1/kd:weak@") for u in res.resumed_units), res.resumed_units
    for f in ("metrics.json", "predictions.csv", "history.jsonl", "model/weights.safetensors"):
        a = (tmp_path / "b" / "work" / f).read_bytes()
        assert a == (tmp_path / "ref" / "work" / f).read_bytes(), f


def test_carve_free_gcn_student_curves_cover_the_held_out_rows_that_have_it(epoch_choices):
    """gcn: a fold student's trace covers every held-out node of its graph; its epoch count
    is chosen on the rows that have the student's modality (partial coverage)."""
    seen = epoch_choices
    specs = make_specs(["strong", "weak"], n_features=[30, 30], signal=[3.0, 1.5], noise=0.5,
                       n_informative=30, shared=1.0)  # fmt: skip
    cch = simulate(n_samples=200, n_classes=2, modalities=specs, missing_rate=0.15, seed=1)
    cfg = {**FAST, "pretrain_epochs": 6, "kd_epochs": 4, "epochs": 6, "folds": 3}
    res = train(cch, seed=0, encoder="gcn", refit_on="train", **cfg)
    planned = [e for e in res.plan if e["enabled"]]
    assert planned and all("kd_epochs" in e for e in planned)
    traces, y_held = seen[0]
    assert all(t.shape[1] == len(y) for t, y in zip(traces, y_held, strict=True))
    assert sum(len(y) for y in y_held) < int((res.predictions["split"] != "test").sum())
