"""``balmm train`` under torchrun: two processes, gloo backend, on CPU.

Real subprocesses (``python -m torch.distributed.run --nproc_per_node=2 -m balmm train``)
on small generated data, against the same command as one process: the same outputs and
protocol, ``world_size``/``backend`` recorded, metrics within half a point.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
# no dropout of any kind: each rank draws its own dropout masks for its half of a
# minibatch, one process draws them for the whole; without them two ranks compute the
# single process's mean gradient (equal halves: batch 32 over 112 fit samples, no missing
# assay), so the runs may differ only by float rounding
ARGS = ["--epochs", "10", "--folds", "2", "--seed", "0", "--kd-epochs", "3",
        "--set", "pretrain_epochs=8", "--set", "n_boot=10", "--set", "batch_size=32",
        "--set", "dropout=0", "--set", "input_dropout=0",
        "--set", "modality_dropout=0"]  # fmt: skip
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    from balmm.data.io import write_h5mu
    from balmm.data.simulate import simulate

    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "sim.h5mu"
    mods = {"a": {"n_features": 16, "signal": 2.0}, "b": {"n_features": 10, "signal": 1.0}}
    write_h5mu(simulate(n_samples=200, modalities=mods, missing_rate=0.0, seed=2), data)
    one, two = tmp / "one", tmp / "two"
    _run([sys.executable, "-m", "balmm", "-q", "train", str(data), "--out", str(one), *ARGS],
         tmp)  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "balmm", "-q", "train"]  # fmt: skip
    _run([*torchrun, str(data), "--out", str(two), *ARGS], tmp)
    return one, two


def test_two_gloo_processes_match_one_process(runs) -> None:
    one, two = runs
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert (m1["protocol"]["world_size"], m1["protocol"]["backend"]) == (1, None)
    assert (m2["protocol"]["world_size"], m2["protocol"]["backend"]) == (2, "gloo")
    skip = {"world_size", "backend", "selected_epoch"}
    # the decisions cross-fitting takes (epoch counts, complementarity) are identical: its
    # epoch curves are shared out over the ranks, each trained by one rank as one process
    assert m2["protocol"]["decisions"]["cross_fitted"]
    assert {k: v for k, v in m1["protocol"].items() if k not in skip} == {
        k: v for k, v in m2["protocol"].items() if k not in skip
    }
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    p1, p2 = pd.read_csv(one / "predictions.csv"), pd.read_csv(two / "predictions.csv")
    assert list(p1.columns) == list(p2.columns)
    assert p1["sample"].tolist() == p2["sample"].tolist()
    for split in ("val", "test"):
        for k in METRICS:
            a, b = m1[split]["fused"][k], m2[split]["fused"][k]
            assert abs(a - b) <= 0.005, (split, k, a, b)


def test_rank0_alone_writes(runs) -> None:
    one, two = runs
    # one output folder (its checkpoints included) per command, nothing beside it
    assert sorted(p.name for p in two.parent.iterdir()) == ["one", "sim.h5mu", "two"]
    hist = [json.loads(line) for line in (two / "history.jsonl").read_text().splitlines()]
    assert hist and all("loss" in h for h in hist)


def test_commands_other_than_train_refuse_torchrun(tmp_path) -> None:
    """Only train is rank-aware: N copies of profile would race for one --out, so a command
    started with WORLD_SIZE > 1 exits 2 with one line and leaves --out alone."""
    env = dict(_env(), WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    cmd = [sys.executable, "-m", "balmm", "profile", "--out", "prof"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "does not run under torchrun" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "prof").exists()


# a torchrun worker (and, run in the test's process, the single process): spread() itself,
# cross-fitting's epoch curves and `balmm bench`'s units over the ranks
SPREAD_SCRIPT = """
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from balmm.cli import main
from balmm.config import TrainConfig
from balmm.progress import NULL_PROGRESS
from balmm.training import distributed
from balmm.training.checkpoint import Checkpointer
from balmm.training.crossfit import crossfit_alone
from balmm.training.fold_sets import fold_assignment
from balmm.training.tensors import split_from

npz, data, bench_out = sys.argv[1:4]
group = distributed.init("cpu")
rank = group.rank if group else 0
torch.set_num_threads(1)
ran = distributed.spread(list(range(5)), lambda i: (i, distributed.current() is None, rank))
rng = np.random.default_rng(0)
n = 90
y = rng.integers(0, 2, n)
X = {m: (rng.normal(size=(n, d)) + s * y[:, None]).astype(np.float32)
     for m, d, s in (("a", 12, 1.0), ("b", 8, 0.3))}
mask = {m: np.ones(n, dtype=bool) for m in X}
mask["b"][::7] = False
proc = SimpleNamespace(ids=pd.Index([f"s{i}" for i in range(n)]), X=X, mask=mask, y=y)
train = split_from(proc, np.arange(n), torch.device("cpu"))
cfg = TrainConfig(pretrain_epochs=6, pretrain_patience=0, batch_size=16, seed=3)
cf = crossfit_alone(["a", "b"], {"a": 12, "b": 8}, 2, train, fold_assignment(y, 3, 3), cfg,
                    NULL_PROGRESS, Checkpointer(None, "", 0))
if rank == 0:
    np.savez(npz, ran=np.array(ran), epochs=np.array([cf.epochs["a"], cf.epochs["b"]]),
             **{f"logits_{m}": v for m, v in cf.logits.items()},
             **{f"curve_{m}": np.array(v) for m, v in cf.oof_loss_curve.items()})
code = main(["-q", "bench", data, "--balancers", "none", "--classic", "logreg", "--seeds", "2",
             "--device", "cpu", "--threads", "1", "--set", "epochs=3", "--set", "folds=0",
             "--set", "pretrain_epochs=2", "--set", "n_boot=10", "--out", bench_out])
assert code == 0, code
"""


def test_work_spread_over_ranks_matches_one_process(tmp_path) -> None:
    """Work shared out over 2 gloo ranks (each task run by one rank alone) gives bit for bit
    what one process gives: cross-fitting's OOF logits, curves and epoch counts with dropout
    on (DDP ranks would each draw their own masks), and `balmm bench`'s bench.csv, which
    rank 0 alone writes."""
    from balmm.data.io import write_h5mu
    from balmm.data.simulate import simulate

    data = tmp_path / "sim.h5mu"
    mods = {"a": {"n_features": 10, "signal": 2.0}, "b": {"n_features": 6, "signal": 0.5}}
    write_h5mu(simulate(n_samples=90, modalities=mods, missing_rate=0.0, seed=4), data)
    script = tmp_path / "spread_worker.py"
    script.write_text(SPREAD_SCRIPT)
    argv = sys.argv
    try:  # the single process: this one (no torchrun: spread() runs the tasks in order)
        sys.argv = [str(script), str(tmp_path / "one.npz"), str(data), str(tmp_path / "one")]
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          str(script), "two.npz", str(data), "two"], tmp_path)  # fmt: skip
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    # task i ran on rank i % 2, alone (no group inside), results in task order everywhere
    assert one["ran"].tolist() == [[i, 1, 0] for i in range(5)]
    assert two["ran"].tolist() == [[i, 1, i % 2] for i in range(5)]
    for key in one.files:
        if key != "ran":
            np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    bench = (tmp_path / "one" / "bench.csv").read_bytes()
    assert bench == (tmp_path / "two" / "bench.csv").read_bytes()
    rows = pd.read_csv(tmp_path / "one" / "bench.csv")
    assert sorted(set(rows["seed"])) == [0, 1] and "none" in set(rows["method"])
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name not in ("one", "two")]


def test_results_travel_between_ranks_in_host_memory() -> None:
    from collections import namedtuple

    import torch

    from balmm.training.distributed import _on_host

    Pair = namedtuple("Pair", "a b")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t = torch.arange(3.0, device=dev)
    out = _on_host({0: ({"w": t}, [t, Pair(t, "x")]), 1: 2.5})
    assert out[1] == 2.5 and out[0][1][1].b == "x" and isinstance(out[0][1][1], Pair)
    for x in (out[0][0]["w"], out[0][1][0], out[0][1][1].a):
        assert x.device.type == "cpu" and torch.equal(x, t.cpu())
