"""The CUDA path of train and predict (skipped without a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest

from balmm.data.simulate import make_specs, simulate
from balmm.predict import predict
from balmm.training.fit import train

pytestmark = pytest.mark.gpu

FAST = dict(pretrain_epochs=5, kd_epochs=3, epochs=6, n_boot=20, hidden=32, embed_dim=16,
            lr=0.01)  # fmt: skip


@pytest.fixture(scope="module")
def sim():
    specs = make_specs(["strong", "weak", "noise"], n_features=[24, 24, 16],
                       signal=[4.0, 2.5, 0.0], n_informative=[12, 12, 4])  # fmt: skip
    return simulate(n_samples=200, n_classes=3, modalities=specs, missing_rate=0.1, seed=0)


@pytest.mark.parametrize("encoder", ["mlp", "gcn"])
@pytest.mark.parametrize("balancer", ["balmm", "ogm-ge", "uncertainty"])
def test_cuda_train_and_predict(sim, tmp_path, encoder, balancer):
    out = tmp_path / "o"
    res = train(sim, seed=0, device="cuda", encoder=encoder, balancer=balancer, out=out, **FAST)
    assert res.metrics["protocol"]["device"].startswith("cuda")
    assert res.metrics["test"]["fused"]["accuracy"] > 0.5  # 3 classes: chance is 1/3
    test_ids = sim.ids("test", labelled=False)
    df = predict(out, sim.subset(test_ids), device="cuda")
    ref = res.predictions.set_index("sample").loc[df["sample"]]
    cols = [c for c in df.columns if c.startswith("proba_")]
    assert np.allclose(df[cols].to_numpy(), ref[cols].to_numpy(), atol=1e-4)
    # a CUDA bundle predicts on CPU too
    df_cpu = predict(out, sim.subset(test_ids), device="cpu")
    assert np.allclose(df_cpu[cols].to_numpy(), df[cols].to_numpy(), atol=1e-4)
