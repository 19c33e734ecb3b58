"""Cross-fitting's folds trained as one batched model: each member is bit for bit the fold
trained alone, and its held-out curve and early stop are its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from balmm.config import TrainConfig
from balmm.progress import NULL_PROGRESS
from balmm.training.checkpoint import Checkpointer
from balmm.training.curves import BatchedFolds, new_member
from balmm.training.stage1 import train_one
from balmm.training.tensors import Split, infer, mean_log_loss

SMALL = dict(hidden=16, embed_dim=8, batch_size=16, lr=0.01, dropout=0.3, input_dropout=0.2)


def _split(rng: np.random.Generator, n: int, n_features: int = 12) -> Split:
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, n_features)) + y[:, None] * 0.5).astype(np.float32)
    return Split(pd.Index([f"s{i}" for i in range(n)]), {"a": torch.as_tensor(x)},
                 {"a": torch.ones(n, dtype=torch.bool)}, torch.as_tensor(y))  # fmt: skip


@pytest.mark.parametrize("encoder", ["linear", "mlp"])
def test_each_member_is_bit_for_bit_its_fold_trained_alone(encoder):
    """Members of different sizes (so their last minibatches differ in length and they step
    a different number of times per epoch) and of different epoch counts."""
    rng = np.random.default_rng(0)
    cfg = TrainConfig(**SMALL, encoder=encoder, seed=3)
    fits = [_split(rng, n) for n in (50, 51, 67, 33)]
    epochs = [5, 3, 5, 4]
    members = [new_member("a", 12, 3, cfg, k, fit, None, ep, keep=False)
               for k, (fit, ep) in enumerate(zip(fits, epochs, strict=True))]  # fmt: skip
    BatchedFolds("a", members, cfg, "stage1:a").run(NULL_PROGRESS)
    off = Checkpointer(None, "", 0)
    for k, (fit, ep) in enumerate(zip(fits, epochs, strict=True)):
        alone = train_one("a", 12, 3, fit, None, cfg, NULL_PROGRESS, off, "u",
                          (f"fold{k}/", "stage1", "a"), epochs=ep)  # fmt: skip
        got = members[k].net.state_dict()
        assert members[k].epoch == ep
        for name, want in alone["state"].items():
            assert torch.equal(got[name], want), (k, name)


def test_a_member_stops_on_its_own_held_out_curve():
    """Each member's trace is its model's held-out log-probabilities after every epoch, and
    it stops once its held-out log-loss has not fallen for ``pretrain_patience`` epochs."""
    rng = np.random.default_rng(1)
    cfg = TrainConfig(**SMALL, pretrain_epochs=30, pretrain_patience=3, seed=0)
    fits = [_split(rng, n) for n in (40, 41, 45)]
    helds = [_split(rng, n) for n in (15, 15, 12)]
    members = [new_member("a", 12, 3, cfg, k, fit, held, cfg.pretrain_epochs, keep=True)
               for k, (fit, held) in enumerate(zip(fits, helds, strict=True))]  # fmt: skip
    job = BatchedFolds("a", members, cfg, "trace:a")
    job.run(NULL_PROGRESS)
    probe = new_member("a", 12, 3, cfg, 0, fits[0], None, 1, keep=False).net
    for mb, trace in zip(members, job.traces(), strict=True):
        assert trace.shape == (mb.epoch, len(mb.held), 3)
        assert len(mb.snapshots) == mb.epoch
        losses = []
        for e, state in enumerate(mb.snapshots):
            probe.load_state_dict(state)
            p = infer(probe, mb.held, embeddings=False)["a"]
            assert torch.equal(trace[e], torch.log(torch.as_tensor(p).clamp_min(1e-12)))
            losses.append(mean_log_loss(p, mb.held.y.numpy()))
        best = int(np.argmin(losses))
        if mb.epoch < cfg.pretrain_epochs:  # stopped early: patience epochs after its best
            assert mb.epoch - 1 - best == cfg.pretrain_patience
    assert len({mb.epoch for mb in members}) > 1, "the members should stop at their own epochs"
