"""Cross-fitting with the ``gcn`` encoder: each fold builds its graphs on its own training
rows, its held-out rows only attach to them; the run's decisions come from the folds and
the fold models join the final average, which ``balmm predict`` reproduces."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from balmm.cli.app import main
from balmm.config import TrainConfig
from balmm.progress import NULL_PROGRESS
from balmm.threads import scoped_threads
from balmm.training.checkpoint import Checkpointer
from balmm.training.crossfit import crossfit_alone
from balmm.training.curves import BatchedFolds, new_member
from balmm.training.fold_sets import fold_assignment, fold_sets
from balmm.training.tensors import Split
from datagen import two_assay_split, write_named

GCN = dict(encoder="gcn", pretrain_epochs=6, pretrain_patience=0, kd_epochs=3, epochs=6,
           patience=0, n_boot=20, hidden=16, embed_dim=8, lr=0.01, knn_k=5, snf_iterations=3,
           folds=4)  # fmt: skip


def _dense(adj: torch.Tensor) -> np.ndarray:
    return adj.to_dense().numpy()


def test_gcn_fold_never_reads_its_held_out_labels():
    """Flipping the labels of fold 0's held-out rows leaves fold 0's OOF logits and
    embeddings bit-for-bit unchanged, and changes the other folds' (which train on them)."""
    train = two_assay_split(np.random.default_rng(0), n=96, n_features=8, n_missing_b=10)
    y = train.y.numpy()
    folds = fold_assignment(y, 4, seed=0)
    cfg = TrainConfig(**GCN)
    off = Checkpointer(None, "", 0)
    flipped = y.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]
    poisoned = Split(train.ids, train.X, train.M, torch.as_tensor(flipped))
    with scoped_threads(1):  # as train() runs it: tiny sparse products, one thread
        clean, dirty = (crossfit_alone(["a", "b"], {"a": 8, "b": 8}, 2, s, folds, cfg,
                                       NULL_PROGRESS, off) for s in (train, poisoned))  # fmt: skip
    held = folds == 0
    for m in ("a", "b"):
        has = clean.present[m]
        assert np.isfinite(clean.logits[m][has]).all()  # every sample with m has OOF logits
        np.testing.assert_array_equal(clean.logits[m][held], dirty.logits[m][held])
        np.testing.assert_array_equal(clean.z[m][held], dirty.z[m][held])
        assert not np.array_equal(clean.logits[m][~held & has], dirty.logits[m][~held & has])


def test_gcn_held_out_rows_only_attach_to_their_folds_graphs():
    """Changing fold 0's held-out FEATURES leaves fold 0's training graphs (over all its
    training rows, and over its fit rows with the carve attached) and a model trained on
    them bit-for-bit unchanged; only the held-out rows' own attached edges move."""
    train = two_assay_split(np.random.default_rng(0), n=96, n_features=8, n_missing_b=10)
    folds = fold_assignment(train.y.numpy(), 4, seed=0)
    cfg = TrainConfig(**GCN)
    held = folds == 0
    X2 = {m: x.clone() for m, x in train.X.items()}
    for m in X2:
        X2[m][torch.as_tensor(held)] += 3.0 * torch.randn(int(held.sum()), X2[m].shape[1])
    moved = Split(train.ids, X2, train.M, train.y)
    a, _ = fold_sets(train, folds, 0, cfg)
    b, _ = fold_sets(moved, folds, 0, cfg)
    for name in ("inside", "fit", "val"):
        np.testing.assert_array_equal(_dense(a[name].adj), _dense(b[name].adj))
        for m in ("a", "b"):
            torch.testing.assert_close(a[name].gX[m], b[name].gX[m], rtol=0, atol=0)
    n_in = len(a["inside"])
    ha, hb = _dense(a["held"].adj), _dense(b["held"].adj)
    np.testing.assert_array_equal(ha[:n_in], hb[:n_in])  # the fold's graph: no edge to them
    assert not np.array_equal(ha[n_in:], hb[n_in:])  # their own attachment moved
    assert (ha[:n_in, n_in:] == 0).all()
    # a fold-0 model trained on its graph: the same weights, bit for bit
    states = []
    for sets in (a, b):
        mb = new_member("a", 8, 2, cfg, 0, sets["inside"], None, 4, keep=False)
        with scoped_threads(1):
            BatchedFolds("a", [mb], cfg, "t").run(NULL_PROGRESS)
        states.append(mb.net.state_dict())
    for key, v in states[0].items():
        torch.testing.assert_close(v, states[1][key], rtol=0, atol=0)


@pytest.mark.parametrize("refit_on", ["fit", "train"])
def test_gcn_train_cross_fits_and_predict_reproduces_the_fold_average(tmp_path, refit_on):
    """refit_on = "train": the refit's graph holds every training sample (no carve)."""
    inputs = write_named(tmp_path / "in", n=72)
    out = tmp_path / "run"
    opts = {**GCN, "refit_on": refit_on}
    sets = [x for k, v in opts.items() if k != "folds" for x in ("--set", f"{k}={json.dumps(v)}")]
    code = main(["train", *inputs, "--labels", str(tmp_path / "in" / "labels.csv"), "--out",
                 str(out), "--seed", "0", "--folds", "3", *sets])  # fmt: skip
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    dec = m["protocol"]["decisions"]
    assert m["protocol"]["graph"] == "inductive"
    assert dec["cross_fitted"] is True and set(dec["stage1_epochs"]) == {"m0", "m1"}
    assert dec["final_model"] == {"kind": "average", "members": 4}
    assert dec.get("refit_on", {"kind": "fit"})["kind"] == refit_on
    assert (m["protocol"]["n_val"] == 0) == (refit_on == "train")
    assert json.loads((out / "model" / "model.json").read_text())["n_members"] == 3
    pred = tmp_path / "pred"
    code = main(["predict", str(out), *inputs, "--out", str(pred)])
    assert code == 0
    ref = pd.read_csv(out / "predictions.csv").set_index("sample")
    ref = ref[ref["split"] == "test"]
    got = pd.read_csv(pred / "predictions.csv").set_index("sample").loc[ref.index]
    cols = [c for c in ref.columns if c.startswith("proba_")]
    assert len(ref) > 0 and cols
    np.testing.assert_allclose(got[cols].to_numpy(), ref[cols].to_numpy(), atol=1e-6, rtol=0)


def test_gcn_cross_fitted_run_resumes_byte_identical(tmp_path):
    """Interrupted inside the fold curves (graph members; the other units resume as for every
    encoder: tests/test_checkpoint.py), a gcn run resumes to the uninterrupted run's bytes."""
    from balmm.data.simulate import simulate
    from balmm.training.fit import train
    from test_checkpoint import Run, StopAt

    mods = {"a": {"n_features": 10, "signal": 2.0}, "b": {"n_features": 8, "signal": 1.0}}
    data = simulate(n_samples=90, modalities=mods, seed=2)
    cfg = {**GCN, "folds": 3, "checkpoint_every": 2}
    train(data, seed=0, out=Run(tmp_path / "ref", tmp_path / "ref-ckpt"), **cfg)
    files = ["metrics.json", "predictions.csv", "history.jsonl", "model/weights.safetensors",
             "model/graph.safetensors"]  # fmt: skip
    for key, n in (("trace:b", 3),):
        ckpt = tmp_path / f"ckpt-{key.replace('/', '_')}"
        with pytest.raises(KeyboardInterrupt):
            train(data, seed=0, out=Run(tmp_path / f"a{n}{key[0]}", ckpt),
                  progress=StopAt(key, n), **cfg)  # fmt: skip
        out = tmp_path / f"b-{key.replace('/', '_')}"
        res = train(data, seed=0, out=Run(out, ckpt), **cfg)
        assert any(u.startswith(f"{key}@") for u in res.resumed_units), res.resumed_units
        for f in files:
            assert (out / "work" / f).read_bytes() == (
                tmp_path / "ref" / "work" / f
            ).read_bytes(), f
