"""The prefetching loader: the next minibatch of on-disk features is read in a background
thread while the current one trains, with the same rows in the same order, so a model
trained with the loader on is bit for bit the one trained with it off."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from balmm.data.io import load_inputs, write_h5mu
from balmm.data.simulate import make_specs, simulate
from balmm.training import loop, prefetch
from balmm.training.fit import train
from balmm.training.prefetch import prefetched
from balmm.training.tensors import RowSource


class RecordingMatrix:
    """A host matrix that records which rows were read, and by which thread."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape, self.reads = x, x.shape, []

    def __getitem__(self, rows):
        self.reads.append((np.asarray(rows).tolist(), threading.current_thread().name))
        return self.x[rows]


def test_prefetched_batches_are_the_rows_asked_for_read_ahead_in_the_background():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    mat = RecordingMatrix(x)
    src = RowSource(mat, np.arange(20)[::-1], torch.device("cpu"))  # a split: rows reversed
    dense = torch.from_numpy(x)
    batches = [np.array([0, 3, 5]), np.array([7, 1]), np.array([19, 2, 4, 6])]
    loader = prefetched({"a": src, "b": dense}, batches, torch.device("cpu"))
    got = [next(loader)]
    deadline = time.monotonic() + 10
    while len(mat.reads) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(mat.reads) == 2  # the next batch was read before it was asked for
    got += list(loader)
    # features already on the device are left to the caller; the others are the rows asked
    # for, in order, each read by the background thread
    assert all(set(feats) == {"a"} for feats in got)
    for b, feats in zip(batches, got, strict=True):
        assert torch.equal(feats["a"], dense.flip(0)[b])
    assert [rows for rows, _ in mat.reads] == [(19 - b).tolist() for b in batches]
    assert all(name.startswith("balmm-prefetch") for _, name in mat.reads)


@pytest.fixture(scope="module")
def backed(tmp_path_factory):
    specs = make_specs(
        ["rna", "adt"], n_features=[40, 10], signal=[2.5, 1.5], n_informative=[10, 5]
    )
    sim = simulate(n_samples=140, n_classes=2, modalities=specs, missing_rate=0.1, seed=7)
    for m in sim.mods.values():
        m.X = sp.csr_matrix(np.asarray(m.X))
    path = tmp_path_factory.mktemp("prefetch") / "sparse.h5mu"
    write_h5mu(sim, path)
    return load_inputs([str(path)], backed=True)


def test_backed_training_with_and_without_the_loader_gives_the_same_model(backed, monkeypatch):
    fast = dict(pretrain_epochs=3, pretrain_patience=0, kd_epochs=2, epochs=4, patience=0,
                n_boot=10, hidden=16, embed_dim=8, lr=0.01, batch_size=16)  # fmt: skip
    reads = []
    real = prefetch._read

    def counting(*args):
        reads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(prefetch, "_read", counting)
    on = train(backed, seed=0, **fast)
    assert reads and all(n.startswith("balmm-prefetch") for n in reads)  # the loader ran
    monkeypatch.setattr(loop, "PREFETCH", False)
    n_reads = len(reads)
    off = train(backed, seed=0, **fast)
    assert len(reads) == n_reads  # and not here
    for k, v in on.model.state_dict().items():
        assert torch.equal(v, off.model.state_dict()[k]), k
    assert on.history == off.history
    assert on.metrics["test"] == off.metrics["test"]
