"""The training loop: per-step values read once per epoch, stage time budgets, epochs."""

from __future__ import annotations

import math

import pytest
import torch

from balmm.config import TrainConfig
from balmm.data.simulate import make_specs, simulate
from balmm.model.fusion import MultiModalNet
from balmm.training.budget import StageBudget
from balmm.training.fit import _resolve_config, train
from balmm.training.loop import StepLog

FAST = dict(pretrain_epochs=6, pretrain_patience=0, kd_epochs=4, epochs=8, patience=0,
            n_boot=20, hidden=16, embed_dim=8, lr=0.01, folds=0)  # fmt: skip


@pytest.fixture(scope="module")
def sim():
    specs = make_specs(["a", "b"], n_features=[12, 10], signal=[3.0, 2.0], shared=[0.5, 0.5],
                       n_informative=[6, 5])  # fmt: skip
    return simulate(n_samples=120, n_classes=2, modalities=specs, missing_rate=0.1, seed=5)


def test_step_log_equals_host_side_accumulation():
    """Kept on the device and read once, the epoch means are bit-for-bit those of summing
    each step's values as Python floats (the history's arithmetic before)."""
    torch.manual_seed(0)
    net = MultiModalNet({"a": 7, "b": 5}, 3, encoder="mlp", hidden=8, embed_dim=4)
    net.encoders["b"].requires_grad_(False)  # frozen: no gradient, norm 0
    log = StepLog(net)
    sums: dict[str, float] = {}
    gsum = {"a": 0.0, "b": 0.0}
    for step in range(5):
        xs = {"a": torch.randn(16, 7), "b": torch.randn(16, 5)}
        ms = {m: torch.ones(16, dtype=torch.bool) for m in xs}
        out = net(xs, ms)
        y = torch.randint(0, 3, (16,))
        parts = {m: torch.nn.functional.cross_entropy(v, y) for m, v in out["logits"].items()}
        total = sum(parts.values()) * (1 + step)
        net.zero_grad(set_to_none=True)
        total.backward()
        log.add(total, parts)
        values = [total.item(), *(v.item() for v in parts.values())]
        for k, v in zip(["total", *parts], values, strict=True):
            sums[k] = sums.get(k, 0.0) + v
        for m, enc in net.encoders.items():
            sq = sum(p.grad.pow(2).sum().item() for p in enc.parameters() if p.grad is not None)
            gsum[m] += math.sqrt(sq)
    loss, gnorm = log.means()
    assert loss == {k: v / 5 for k, v in sums.items()}
    assert gnorm == {k: v / 5 for k, v in gsum.items()}
    assert gnorm["b"] == 0.0 and gnorm["a"] > 0


def test_time_budget_stops_every_stage_at_an_epoch_boundary(sim):
    res = train(sim, seed=0, time_budget=1e-6, **FAST)
    stopped = res.metrics["protocol"]["stopped_by_time_budget"]
    assert res.metrics["protocol"]["time_budget_s"] == 1e-6
    assert {StageBudget.stage(k) for k in stopped} >= {"stage1", "stage2"}
    for key in stopped:  # each stopped loop trained exactly one whole epoch, and says so
        recs = [h for h in res.history if h["stage"] == key]
        assert [h["epoch"] for h in recs] == [1]
        assert recs[0]["stopped"] == "time_budget" and "val_f1" in recs[0]
    full = train(sim, seed=0, **FAST)
    assert "stopped_by_time_budget" not in full.metrics["protocol"]
    assert max(h["epoch"] for h in full.history if h["stage"] == "stage2") == FAST["epochs"]


def test_distillation_epochs_follow_epochs_unless_given():
    assert _resolve_config(None, {"epochs": 3}).kd_epochs == 3
    assert _resolve_config(None, {"epochs": 3, "kd_epochs": 7}).kd_epochs == 7
    assert _resolve_config(TrainConfig(kd_epochs=9), {}).kd_epochs == 9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda_trains_as_well_as_float32(sim, monkeypatch):
    from balmm.training.loop import TrainLoop

    seen = []
    original = TrainLoop._autocast

    def spy(self):
        seen.append(self._bf16)
        return original(self)

    monkeypatch.setattr(TrainLoop, "_autocast", spy)
    bf16 = train(sim, seed=0, device="cuda", bf16=True, **FAST)
    assert seen and all(seen)  # every step ran under bf16 autocast
    monkeypatch.undo()
    fp32 = train(sim, seed=0, device="cuda", **FAST)
    a, b = bf16.metrics["test"]["fused"], fp32.metrics["test"]["fused"]
    assert abs(a["auroc"] - b["auroc"]) < 0.1


def test_cli_time_budget_and_kd_epochs(sim, tmp_path):
    import json

    from balmm.cli import main
    from balmm.data.io import write_h5mu

    data = tmp_path / "sim.h5mu"
    write_h5mu(sim, data)
    out = tmp_path / "out"
    args = ["-q", "train", str(data), "--out", str(out), "--epochs", "5", "--kd-epochs", "2",
            "--time-budget", "0.000001", "--folds", "0", "--set", "pretrain_epochs=4",
            "--set", "n_boot=10"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["time_budget_s"] == 1e-6
    assert "stage2" in metrics["protocol"]["stopped_by_time_budget"]
    config = json.loads((out / "model" / "model.json").read_text())["config"]
    assert (config["epochs"], config["kd_epochs"], config["time_budget"]) == (5, 2, 1e-6)
    assert main(["train", str(data), "--out", str(tmp_path / "bad"), "--time-budget", "-1"]) == 2
