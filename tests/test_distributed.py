"""``balmm train`` under torchrun: two processes, gloo backend, on CPU.

Real subprocesses (``python -m torch.distributed.run --nproc_per_node=2 -m balmm train``)
on small generated data, against the same command as one process: the same outputs and
protocol, ``world_size``/``backend`` recorded, metrics within half a point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
# no dropout of any kind: each rank draws its own dropout masks for its half of a
# minibatch, one process draws them for the whole; without them two ranks compute the
# single process's mean gradient (equal halves: batch 32 over 112 fit samples, no missing
# assay), so the runs may differ only by float rounding
ARGS = ["--epochs", "10", "--folds", "0", "--seed", "0", "--kd-epochs", "3",
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
