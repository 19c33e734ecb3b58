"""Training checkpoints: a run interrupted at any stage or epoch resumes to byte-identical
outputs, and checkpoints of another run are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from balmm.data.simulate import make_specs, simulate
from balmm.errors import InputError
from balmm.training.fit import train

FAST = dict(pretrain_epochs=6, pretrain_patience=0, kd_epochs=4, epochs=6, patience=0,
            n_boot=20, hidden=32, embed_dim=16, lr=0.01, checkpoint_every=2)  # fmt: skip
OUTPUTS = ["metrics.json", "predictions.csv", "history.jsonl", "pairing.csv",
           "model/weights.safetensors", "model/model.json"]  # fmt: skip


class Run:
    """A minimal open output run (the OutputRun contract: work, checkpoints, commit)."""

    def __init__(self, root: Path, checkpoints: Path) -> None:
        self.work = root / "work"
        self.work.mkdir(parents=True)
        self.checkpoints = checkpoints
        self.committed = False

    def commit(self) -> None:
        self.committed = True


class StopAt:
    """A progress that raises KeyboardInterrupt when task ``key`` reaches ``n`` updates
    (or, with ``n == 0``, when the task starts): an interruption at a chosen point."""

    def __init__(self, key: str, n: int) -> None:
        self.key, self.n, self.count = key, n, 0

    def start(self, key, description, total=None):
        if key == self.key and self.n == 0:
            raise KeyboardInterrupt
        if key == self.key:
            self.count = 0

    def update(self, key, advance=1, **fields):
        if key == self.key:
            self.count += advance
            if self.count >= self.n:
                raise KeyboardInterrupt

    def finish(self, key):
        pass


@pytest.fixture(scope="module")
def data():
    # a weak student sharing its latent with a strong teacher: the plan distils into it
    specs = make_specs(["strong", "weak"], n_features=[30, 30], signal=[3.0, 1.5], noise=0.5,
                       n_informative=30, shared=1.0)  # fmt: skip
    return simulate(n_samples=200, n_classes=2, modalities=specs, seed=1)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    res = train(data, seed=0, out=Run(root, root / "ckpt"), **FAST)
    assert any(e["enabled"] for e in res.plan), "the scenario must exercise distillation"
    return root / "work"


@pytest.mark.parametrize(
    "key,n",
    [
        ("stage1:strong", 3),
        ("stage1:weak", 0),  # the final unimodal models train the cross-fitted epoch count
        ("trace:weak", 4),  # the folds' epoch curves (held-out log-probabilities)
        ("trace:weak", 0),  # the second modality's curves, the first one's done
        ("fold1/kd:weak", 3),
        ("stage2", 5),
        ("write", 0),
    ],  # fmt: skip
)
def test_resume_after_interrupt_is_byte_identical(data, reference, tmp_path, key, n):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(data, seed=0, out=Run(tmp_path / "a", ckpt), progress=StopAt(key, n), **FAST)
    assert any(ckpt.glob("*.pt"))
    res = train(data, seed=0, out=Run(tmp_path / "b", ckpt), **FAST)
    assert res.resumed_units, "nothing was restored from the checkpoints"
    if n:  # interrupted inside a unit: continued from its last in-loop state
        assert any(u.startswith(f"{key}@") for u in res.resumed_units), res.resumed_units
    for f in OUTPUTS:
        assert (tmp_path / "b" / "work" / f).read_bytes() == (reference / f).read_bytes(), f


def test_resume_refuses_another_runs_checkpoints(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(data, seed=0, out=Run(tmp_path / "a", ckpt), progress=StopAt("stage2", 1), **FAST)
    with pytest.raises(InputError, match=str(ckpt)):
        train(data, seed=1, out=Run(tmp_path / "b", ckpt), **FAST)


def test_unreadable_partial_state_restarts_its_unit(data, reference, tmp_path, caplog):
    """A partial loop state is not forced to disk (a system crash may leave it empty):
    resuming drops it with a warning and trains that unit again, to the same outputs."""
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(data, seed=0, out=Run(tmp_path / "a", ckpt),
              progress=StopAt("trace:weak", 4), **FAST)  # fmt: skip
    (partial,) = ckpt.glob("trace--weak.loop.pt")
    partial.write_bytes(b"")
    with caplog.at_level("WARNING", logger="balmm"):
        res = train(data, seed=0, out=Run(tmp_path / "b", ckpt), **FAST)
    assert "trace:weak starts again" in caplog.text
    assert not any(u.startswith("trace:weak@") for u in res.resumed_units)
    for f in OUTPUTS:
        assert (tmp_path / "b" / "work" / f).read_bytes() == (reference / f).read_bytes(), f
