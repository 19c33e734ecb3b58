"""balmm train end to end on small generated data: outputs, stages, balancers, seeds."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from balmm.config import TrainConfig
from balmm.data.simulate import make_specs, simulate
from balmm.training.fit import train
from balmm.training.metrics import macro_f1

FAST = dict(pretrain_epochs=6, pretrain_patience=0, kd_epochs=3, epochs=8, patience=0,
            n_boot=20, hidden=32, embed_dim=16, lr=0.01)  # fmt: skip


@pytest.fixture(scope="module")
def sim():
    specs = make_specs(["strong", "weak", "noise"], n_features=[24, 24, 16],
                       signal=[4.0, 2.5, 0.0], shared=[0.8, 0.8, 0.0],
                       n_informative=[12, 12, 4])  # fmt: skip
    return simulate(n_samples=160, n_classes=2, modalities=specs, missing_rate=0.15, seed=3)


@pytest.fixture(scope="module")
def run(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "out"
    return train(sim, out=out, seed=1, **FAST), out


def test_output_contract(run):
    res, out = run
    files = ["metrics.json", "predictions.csv", "history.jsonl", "embeddings.h5ad",
             "report.html", "model/weights.safetensors", "model/model.json",
             "model/preprocess/preprocess.json", "plots/val_f1.png",
             "plots/weights.png", "pairing.csv"]  # fmt: skip
    for f in files:
        assert (out / f).is_file(), f
    pairing = pd.read_csv(out / "pairing.csv", index_col="sample")
    assert len(pairing) == len(res.predictions)
    assert {"n_modalities", "complete", "label", "split"} <= set(pairing.columns)
    m = json.loads((out / "metrics.json").read_text())
    for split in ("val", "test"):
        for k in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc", "ece",
                  "per_class_f1"):  # fmt: skip
            assert k in m[split]["fused"]
            assert k in m[split]["modalities"]["strong"]
    imb = m["imbalance"]
    assert set(imb["weights"]) == {"fused", "strong", "weak", "noise"}
    assert set(imb["under_optimisation_gap"]) == {"strong", "weak", "noise"}
    assert "strong" in imb["contributions"]["test"]
    assert m["protocol"]["test_use"].startswith("evaluated once")
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    s2 = [h for h in hist if h["stage"] == "stage2"]
    assert s2 and all({"loss", "weights", "val_f1", "grad_norm"} <= set(h) for h in s2)
    pred = pd.read_csv(out / "predictions.csv")
    assert {"sample", "split", "true", "predicted", "modalities_used"} <= set(pred.columns)
    assert set(pred["split"]) == {"train", "val", "test"}
    # the reported test metrics are those of the predictions file
    t = pred[pred["split"] == "test"]
    classes = m["classes"]
    codes = {c: i for i, c in enumerate(classes)}
    y_true = t["true"].astype(str).map(codes).to_numpy()
    f1 = macro_f1(y_true, t["predicted"].astype(str).map(codes).to_numpy(), len(classes))
    assert f1 == pytest.approx(m["test"]["fused"]["macro_f1"])
    emb = ad.read_h5ad(out / "embeddings.h5ad")
    assert {"X_fused", "X_strong", "X_weak"} <= set(emb.obsm) and "label" in emb.obs
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and 'src="http' not in html
    assert "Distillation plan" in html


def test_noise_not_forced_and_weights_move_to_lagging(run):
    res, _ = run
    imb = res.metrics["imbalance"]
    assert "noise" in imb["excluded_from_fusion"]
    w = [h["weights"] for h in res.history if h["stage"] == "stage2"]
    assert all(x["noise"] == 0.0 for x in w)
    assert w[-1]["weak"] > w[0]["weak"]  # the lagging informative modality gains weight
    # samples lacking a modality are still predicted, from what they have
    pred = res.predictions
    assert pred["predicted"].notna().all()
    lack = ~pred["modalities_used"].str.contains("strong")
    assert lack.any()


def test_excluded_noise_assay_leaves_the_fused_model_unchanged():
    """A pure-noise assay that balmm leaves out of the fusion must not change the fused
    predictions at all: each modality and stage has its own random streams, and the
    excluded encoder stays frozen in stage 2."""
    import dataclasses

    specs = make_specs(["strong", "weak", "noise"], n_features=[24, 24, 16],
                       signal=[4.0, 2.5, 0.0], shared=[0.8, 0.8, 0.0])  # fmt: skip
    with_noise = simulate(n_samples=160, n_classes=2, modalities=specs, seed=5)
    without = dataclasses.replace(
        with_noise, mods={m: a for m, a in with_noise.mods.items() if m != "noise"}
    )
    noise_first = dataclasses.replace(
        with_noise, mods={"noise": with_noise.mods["noise"], **without.mods}
    )
    a = train(without, seed=2, **FAST)
    fused = ["sample", "split", "predicted", *[c for c in a.predictions if c.startswith("proba_")]]
    for given in (with_noise, noise_first):  # the assay given last, then first
        b = train(given, seed=2, **FAST)
        assert "noise" in b.metrics["imbalance"]["excluded_from_fusion"]
        pd.testing.assert_frame_equal(a.predictions[fused], b.predictions[fused], check_exact=True)
        assert a.metrics["test"]["fused"] == b.metrics["test"]["fused"]
    # the noise head still exists and is scored, as a probe on its stage-1 encoder
    assert "noise" in b.metrics["test"]["modalities"]


def test_seed_is_bit_for_bit_repeatable(sim, run):
    res, _ = run
    again = train(sim, seed=1, **FAST)
    pd.testing.assert_frame_equal(res.predictions, again.predictions, check_exact=True)
    assert res.metrics["test"] == again.metrics["test"]


@pytest.mark.parametrize("folds", [0, 5])
def test_distillation_changes_the_student_or_is_reverted(folds):
    # the CCH case: a weaker student that shares its latent with the teacher
    specs = make_specs(["strong", "weak"], n_features=[30, 30], signal=[3.0, 1.5], noise=0.5,
                       n_informative=30, shared=1.0)  # fmt: skip
    data = simulate(n_samples=300, n_classes=2, modalities=specs, seed=1)
    res = train(data, seed=0, folds=folds,
                **{**FAST, "pretrain_epochs": 15, "epochs": 2, "n_boot": 30})  # fmt: skip
    enabled = [e for e in res.plan if e["enabled"]]
    assert [(e["teacher"], e["student"]) for e in enabled] == [("strong", "weak")]
    skipped = [e for e in res.plan if not e["enabled"]]
    assert skipped and all(e["reason"].startswith("disabled:") for e in skipped)
    assert "strong" not in [e["student"] for e in enabled]
    (edge,) = enabled
    evidence = "oof" if folds else "val"
    e = {k.removeprefix(f"{evidence}_"): v for k, v in edge.items()}
    helps = e["log_loss_after"] < e["log_loss_before"]
    # one carve: the validation macro-F1 is recorded once, as the plan's student_val_f1_*
    f1 = "macro_f1" if folds else "student_val_f1"
    assert folds or not {"val_macro_f1_before", "val_macro_f1_after"} & set(edge)
    helps = helps and e[f"{f1}_after"] > e[f"{f1}_before"]
    assert edge["accepted"] == helps
    st = res.stage1_states["weak"]
    assert res.metrics["stage1"]["weak"]["distilled"] == edge["accepted"]
    if edge["accepted"]:  # kept: the student changed
        before, after = st["state"]["encoder"], st["kd_state"]["encoder"]
        assert any(not torch.equal(before[k], after[k]) for k in before)
    else:  # reverted: stage 2 starts from the undistilled student
        assert "kd_state" not in st


@pytest.mark.parametrize("balancer", ["none", "concat", "uncertainty", "ogm-ge"])
def test_baselines_share_the_protocol(sim, balancer):
    res = train(sim, seed=0, balancer=balancer, **{**FAST, "epochs": 3, "pretrain_epochs": 3})
    m = res.metrics
    assert m["protocol"]["balancer"] == balancer
    assert m["protocol"]["n_val"] > 0
    assert 0.0 <= m["test"]["fused"]["macro_f1"] <= 1.0
    if balancer == "concat":
        assert m["test"]["modalities"] == {}
    else:
        assert set(m["test"]["modalities"]) == {"strong", "weak", "noise"}
        assert not m["imbalance"]["excluded_from_fusion"]  # only balmm leaves modalities out


def test_gcn_inductive_and_transductive(sim, tmp_path):
    from balmm.predict import predict

    res = train(sim, seed=0, encoder="gcn", out=tmp_path / "g", **{**FAST, "epochs": 4})
    assert res.metrics["protocol"]["graph"] == "inductive"
    assert "INDUCTIVE" in (tmp_path / "g" / "report.html").read_text()
    test_ids = sim.ids("test", labelled=False)
    df = predict(tmp_path / "g", sim.subset(test_ids))
    ref = res.predictions.set_index("sample").loc[df["sample"]]
    cols = [c for c in df.columns if c.startswith("proba_")]
    assert np.allclose(df[cols].to_numpy(), ref[cols].to_numpy(), atol=1e-5)
    res_t = train(sim, seed=0, encoder="gcn", transductive=True, **{**FAST, "epochs": 2,
                  "pretrain_epochs": 2, "kd": False})  # fmt: skip
    assert res_t.metrics["protocol"]["graph"] == "transductive"
    assert (res_t.predictions["graph"] == "transductive").all()
    assert res_t.embeddings.uns["balmm"]["graph"] == "transductive"
    assert all(h["graph"] == "transductive" for h in res_t.history)


def test_mlp_encoder_still_trains(sim):
    from balmm.model.encoders import MLPEncoder

    assert TrainConfig().encoder == "linear"  # the default chosen by CV (docs/method.md)
    res = train(sim, seed=0, encoder="mlp", **{**FAST, "epochs": 3, "pretrain_epochs": 3})
    assert res.metrics["protocol"]["encoder"] == "mlp"
    assert all(isinstance(e, MLPEncoder) for e in res.model.encoders.values())
    assert 0.0 <= res.metrics["test"]["fused"]["macro_f1"] <= 1.0
