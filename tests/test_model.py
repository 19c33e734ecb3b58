"""Model pieces: masking of missing modalities, sparse SNF graph, inductive attachment,
distillation loss, OGM-GE coefficients, balmm weights."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from balmm.config import TrainConfig
from balmm.model.fusion import MultiModalNet
from balmm.model.graph import (
    adjacency_for_new,
    attach,
    fused_graph,
    gcn_adjacency,
    inductive_adjacency,
)
from balmm.training.balancers import BalmmBalancer, ogm_coefficients
from balmm.training.kd import kd_loss


def _net(**kw):
    torch.manual_seed(0)
    return MultiModalNet({"a": 5, "b": 7}, 3, hidden=8, embed_dim=4, **kw).eval()


def test_missing_modality_is_masked_out():
    net = _net()
    torch.nn.init.normal_(net.fusion.weight)  # not the zero start, so the check has teeth
    xa, xb = torch.randn(4, 5), torch.randn(4, 7)
    masks = {"a": torch.tensor([True] * 4), "b": torch.tensor([True, False, True, False])}
    out1 = net({"a": xa, "b": xb}, masks)
    xb2 = xb.clone()
    xb2[~masks["b"]] = 100.0  # garbage in the rows that lack b
    out2 = net({"a": xa, "b": xb2}, masks)
    lacking = ~masks["b"]
    assert torch.allclose(out1["fused"][lacking], out2["fused"][lacking])
    assert not torch.allclose(out1["fused"][masks["b"]], (out1["fused"] * 0)[masks["b"]])
    # present rows do depend on b
    xb3 = xb.clone()
    xb3[masks["b"]] += 1.0
    out3 = net({"a": xa, "b": xb3}, masks)
    assert not torch.allclose(out1["fused"][masks["b"]], out3["fused"][masks["b"]])


def test_fusion_off_ignores_modality():
    net = _net()
    torch.nn.init.normal_(net.fusion.weight)
    net.fusion_off = {"b"}
    xa = torch.randn(3, 5)
    m = {"a": torch.ones(3, dtype=torch.bool), "b": torch.ones(3, dtype=torch.bool)}
    f1 = net({"a": xa, "b": torch.randn(3, 7)}, m)["fused"]
    f2 = net({"a": xa, "b": torch.randn(3, 7)}, m)["fused"]
    assert torch.allclose(f1, f2)


def test_fold_average_is_the_mean_of_its_members_probabilities():
    """final_model = "average": the fused prediction is the mean of the members' class
    probabilities; embeddings and unimodal heads stay the refit model's."""
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = MultiModalNet({"a": 5, "b": 7}, 3, hidden=8, embed_dim=4).eval()
        torch.nn.init.normal_(net.fusion.weight)  # members that disagree
        nets.append(net)
    xs = {"a": torch.randn(6, 5), "b": torch.randn(6, 7)}
    masks = {"a": torch.ones(6, dtype=torch.bool), "b": torch.tensor([True, False] * 3)}
    with torch.no_grad():
        alone = [torch.softmax(n(xs, masks)["fused"], 1) for n in nets]
        refit = nets[0](xs, masks)
        nets[0].set_members(nets[1:])
        avg = nets[0](xs, masks)
    want = torch.stack(alone).mean(0)
    torch.testing.assert_close(torch.softmax(avg["fused"], 1), want)
    assert not torch.allclose(want, alone[0], atol=1e-3)
    torch.testing.assert_close(avg["z"]["a"], refit["z"]["a"])
    torch.testing.assert_close(avg["logits"]["b"], refit["logits"]["b"])
    # members take the refit model's fusion_off (an assay left out of the fusion)
    nets[0].fusion_off = {"b"}
    nets[0].set_members(nets[1:])
    assert all(n.fusion_off == {"b"} for n in nets[1:])


def test_stacked_fold_average_applies_the_stacker_to_every_members_heads():
    """fusion_head = "stack" with final_model = "average": each fold model's fused
    prediction is the refit's stacker on that model's own head logits, and the ensemble's
    is the mean of those probabilities."""
    from balmm.training.stacking import Stacker
    from balmm.training.stage2 import average_folds

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    logits = {m: rng.normal(size=(60, 3)) + 2.0 * np.eye(3)[y] for m in ("a", "b")}
    state = Stacker(cv=3, seed=0).fit(logits, None, y).to_dict()
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(MultiModalNet({"a": 5, "b": 7}, 3, hidden=8, embed_dim=4, stacked=True))
    xs = {"a": torch.randn(6, 5), "b": torch.randn(6, 7)}
    masks = {"a": torch.ones(6, dtype=torch.bool), "b": torch.tensor([True, False] * 3)}
    with torch.no_grad():
        alone = []
        for net in nets:
            net.eval().stack.load_stacker(state, net.modalities)
            alone.append(torch.softmax(net(xs, masks)["fused"], 1))
            net.stack.active.fill_(False)  # fold models leave stage 2 without a stacker
        nets[0].stack.load_stacker(state, nets[0].modalities)
        assert average_folds(nets[0], nets[1:]) == {"kind": "average", "members": 3}
        avg = torch.softmax(nets[0](xs, masks)["fused"], 1)
    assert all(bool(n.stack.active) for n in nets)
    torch.testing.assert_close(avg, torch.stack(alone).mean(0))
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # members that disagree


def test_contributions_sum_to_fused_logit():
    net = _net()
    torch.nn.init.normal_(net.fusion.weight)
    torch.nn.init.normal_(net.fusion.bias)
    xs = {"a": torch.randn(6, 5), "b": torch.randn(6, 7)}
    masks = {"a": torch.ones(6, dtype=torch.bool), "b": torch.tensor([1, 0, 1, 1, 0, 1]).bool()}
    out = net(xs, masks)
    c = net.contributions(out["z"], masks)
    assert torch.allclose(c["a"] + c["b"], out["fused"], atol=1e-5)


def test_kd_loss_reduces_to_ce_and_kl():
    s = torch.randn(8, 3)
    y = torch.randint(0, 3, (8,))
    ce = F.cross_entropy(s, y)
    t = (torch.randn(8, 3), torch.ones(8, dtype=torch.bool), 1.0)
    assert torch.allclose(kd_loss(s, y, [t], 0.0, 2.0), ce)
    # a teacher identical to the student adds nothing: only (1 - alpha) CE remains
    same = (s.clone(), torch.ones(8, dtype=torch.bool), 1.0)
    assert torch.allclose(kd_loss(s, y, [same], 0.3, 2.0), 0.7 * ce, atol=1e-6)
    # samples without the teacher get plain CE
    absent = (torch.randn(8, 3), torch.zeros(8, dtype=torch.bool), 1.0)
    assert torch.allclose(kd_loss(s, y, [absent], 0.5, 2.0), ce)
    # the KL term is T^2 KL(p_t || p_s)
    T = 3.0
    pt = F.softmax(t[0] / T, 1)
    kl = (pt * (pt.log() - F.log_softmax(s / T, 1))).sum(1).mean()
    assert torch.allclose(kd_loss(s, y, [t], 1.0, T), T**2 * kl, atol=1e-5)


def test_ogm_coefficient_slows_dominant_modality():
    net = _net()
    torch.nn.init.zeros_(net.fusion.weight)
    torch.nn.init.zeros_(net.fusion.bias)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    z = {"a": torch.randn(6, 4), "b": torch.randn(6, 4)}
    with torch.no_grad():  # head a predicts y perfectly, head b is uninformative
        net.heads["a"].weight.zero_()
        net.heads["a"].bias.zero_()
        net.heads["b"].weight.zero_()
        net.heads["b"].bias.zero_()
        z["a"] = torch.zeros(6, 4)
        z["a"][torch.arange(6), y] = 5.0
        net.heads["a"].weight[:3, :3] = torch.eye(3)
    masks = {m: torch.ones(6, dtype=torch.bool) for m in z}
    coef = ogm_coefficients(net, z, masks, y, alpha=0.5)
    assert coef["a"] < 1.0 and coef["b"] == 1.0


def test_balmm_weights_move_to_lagging_informative_and_skip_noise():
    cfg = TrainConfig(weight_ema=0.5, weight_beta=2.0)
    label_mi = {"strong": (0.6, 0.5), "weak": (0.3, 0.2), "noise": (-0.05, -0.2)}
    b = BalmmBalancer(["strong", "weak", "noise"], cfg, label_mi)
    assert "noise" in b.excluded and b.w["noise"] == 0.0
    start = b.weights()
    for _ in range(6):
        b.end_epoch({"fused": 0.9, "strong": 0.9, "weak": 0.55, "noise": 0.5})
    w = b.weights()
    assert w["weak"] > start["weak"]  # the lagging, informative head is up-weighted
    assert w["weak"] / w["strong"] > start["weak"] / start["strong"]
    assert w["noise"] == 0.0  # uninformative: not forced
    # when the weak head catches up its weight relaxes back to 1 (informative, no lag)
    for _ in range(20):
        b.end_epoch({"fused": 0.9, "strong": 0.9, "weak": 0.9, "noise": 0.5})
    assert math.isclose(b.weights()["weak"], 1.0, rel_tol=1e-3)


def test_balmm_weights_intermodal_term_calibrates_the_lift():
    """Complementary information raises a lagging head's lift, redundancy lowers it; the
    lift never turns into a cut, and the leading head is not affected."""
    cfg = TrainConfig(weight_ema=0.0, weight_beta=2.0, weight_gamma=0.5)
    label_mi = {"strong": (0.6, 0.5), "weak": (0.3, 0.2)}
    f1 = {"fused": 0.9, "strong": 0.9, "weak": 0.6}
    w = {}
    for kappa in (-1.0, 0.0, 1.0):
        b = BalmmBalancer(["strong", "weak"], cfg, label_mi, {"strong": 0.0, "weak": kappa})
        b.end_epoch(f1)
        w[kappa] = b.weights()
        assert w[kappa]["strong"] == 1.0
    assert 1.0 < w[-1.0]["weak"] < w[0.0]["weak"] < w[1.0]["weak"]
    lag = (0.9 - 0.6) / 0.9
    assert math.isclose(w[1.0]["weak"], 1 + 2.0 * lag * 1.5)
    off = BalmmBalancer(["strong", "weak"], cfg.replace(mi_weights=False), label_mi, {"weak": 1.0})
    off.end_epoch(f1)
    assert off.weights()["weak"] == 1.0  # ablation: constant weights


def test_snf_graph_sparse_and_inductive_attachment():
    rng = np.random.default_rng(0)
    n, k = 60, 5
    y = np.repeat([0, 1], n // 2)
    X = {
        "a": rng.normal(size=(n, 6)) + 3 * y[:, None],
        "b": rng.normal(size=(n, 4)) + 2 * y[:, None],
    }
    M = {"a": np.ones(n, bool), "b": np.r_[np.ones(n - 5, bool), np.zeros(5, bool)]}
    w, eps = fused_graph(X, M, k, 5, 0.5)
    assert sp.issparse(w) and w.nnz <= 2 * k * n
    assert abs(w - w.T).max() < 1e-12
    # neighbours are mostly of the same class (the kernel is meaningful)
    coo = w.tocoo()
    same = (y[coo.row] == y[coo.col]).mean()
    assert same > 0.9
    adj = gcn_adjacency(w)
    assert np.allclose(np.asarray(adj.sum(1)).ravel(), 1.0)
    Xn = {m: x[:10] + 0.01 for m, x in X.items()}
    Mn = {m: np.ones(10, bool) for m in X}
    w_new = attach(X, M, eps, Xn, Mn, k, 0.5)
    assert w_new.shape == (10, n)
    full = inductive_adjacency(adj, w_new)
    # training rows are unchanged and receive no edge from the new samples
    assert abs(full[:n, :n] - adj).max() == 0 and full[:n, n:].nnz == 0
    assert np.allclose(np.asarray(full.sum(1)).ravel(), 1.0)


def test_transductive_graph_is_rebuilt_with_the_models_snf_iterations():
    # A transductive bundle stores no training adjacency; predict rebuilds it and must use
    # the model's snf_iterations (it used to be fixed at 10).
    rng = np.random.default_rng(1)
    X = {"a": rng.normal(size=(40, 5)), "b": rng.normal(size=(40, 3))}
    M = {m: np.ones(40, bool) for m in X}
    w, eps = fused_graph(X, M, 5, 2, 0.5)
    state = {f"X:{m}": torch.as_tensor(x) for m, x in X.items()}
    state.update({f"M:{m}": torch.as_tensor(M[m].astype(np.uint8)) for m in M})
    state.update({f"eps:{m}": torch.as_tensor(eps[m]) for m in eps})
    Xn = {m: x[:4] + 0.01 for m, x in X.items()}
    Mn = {m: np.ones(4, bool) for m in X}
    got, _, _ = adjacency_for_new(state, Xn, Mn, 5, 0.5, iterations=2)
    want = inductive_adjacency(gcn_adjacency(w), attach(X, M, eps, Xn, Mn, 5, 0.5))
    assert abs(got - want).max() < 1e-12
    other, _, _ = adjacency_for_new(state, Xn, Mn, 5, 0.5, iterations=10)
    assert abs(other - want).max() > 1e-6


def test_linear_encoder_is_one_affine_map():
    from balmm.model.encoders import LinearEncoder, make_encoder

    enc = make_encoder("linear", 5, hidden=8, embed_dim=3).eval()  # eval: dropout off
    assert isinstance(enc, LinearEncoder)
    lin = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert len(lin) == 1
    x = torch.randn(4, 5)
    assert torch.allclose(enc(x), x @ lin[0].weight.T + lin[0].bias)
    assert torch.allclose(enc(2 * x) - enc(x), enc(x) - enc(0 * x), atol=1e-6)  # affine


def test_model_package_never_imports_training() -> None:
    """The data flow points one way: model/ is built on by training/, never the reverse."""
    import ast
    from pathlib import Path

    import balmm.model

    for path in Path(balmm.model.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not any(n.startswith("balmm.training") for n in names), path.name
