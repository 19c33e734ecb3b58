"""Fault injection: balmm killed, interrupted, run twice at once or pointed at the wrong
place must lose nothing, leave nothing that looks complete, and say why in one line.

Processes are real ``python -m balmm`` subprocesses on small generated data; the
test-only ``BALMM_TEST_PAUSE_AT`` makes one wait at a named point so it can be killed
exactly there (balmm/testpoints.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balmm.cli import main
from balmm.outputs import MARKER

SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = ["--epochs", "3", "--set", "pretrain_epochs=2", "--set", "kd_epochs=2", "--set", "n_boot=10"]


@pytest.fixture(scope="module")
def h5mu(tmp_path_factory) -> Path:
    from balmm.data.io import write_h5mu
    from balmm.data.simulate import simulate

    path = tmp_path_factory.mktemp("data") / "sim.h5mu"
    write_h5mu(simulate(n_samples=80, modalities={"a": {"n_features": 12, "signal": 2.0},
                                                  "b": {"n_features": 8, "signal": 0.5}},
                        seed=1), path)  # fmt: skip
    return path


def _env(pause: str | None = None, ready: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("BALMM_TEST_PAUSE_AT", None)
    if pause:
        env["BALMM_TEST_PAUSE_AT"] = pause
        env["BALMM_TEST_PAUSE_READY"] = str(ready)
    return env


def _start(args: list[str], cwd: Path, pause: str) -> tuple[subprocess.Popen, Path]:
    ready = cwd / f".ready-{pause}-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "balmm", *args], cwd=cwd, env=_env(pause, ready),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {pause}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"never reached {pause}")
        time.sleep(0.05)
    ready.unlink()
    return proc, ready


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "balmm", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _looks_complete(folder: Path) -> list[str]:
    """Everything under ``folder`` that a user could take for a finished output."""
    bad = []
    for p in folder.rglob("*"):
        if p.name in (MARKER, "metrics.json", "predictions.csv", "bench.csv", "profile.json"):
            bad.append(str(p.relative_to(folder)))
    return bad


# ----------------------------------------------------------------------------- refusals
def test_out_that_is_not_ours_is_refused_and_kept(tmp_path: Path, h5mu: Path, capsys) -> None:
    """Finding 1: train --out proj deleted the user's files; predict run1 --out run1 deleted
    the model; train data.h5mu --out data.h5mu turned the input into a folder."""
    proj = tmp_path / "proj"
    (proj / "raw").mkdir(parents=True)
    (proj / "raw" / "sample_data.csv").write_text("a,b\n1,2\n")
    (proj / "NOTES.md").write_text("notes")
    assert main(["train", str(h5mu), "--out", str(proj)]) == 2
    assert "proj" in capsys.readouterr().err
    assert (proj / "NOTES.md").read_text() == "notes"
    assert (proj / "raw" / "sample_data.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]

    before = h5mu.read_bytes()
    assert main(["train", str(h5mu), "--out", str(h5mu), "--overwrite"]) == 2
    assert "which this run reads" in capsys.readouterr().err
    assert h5mu.read_bytes() == before

    model = tmp_path / "proj"  # any folder given as the model is protected, even with --overwrite
    assert main(["predict", str(model), str(h5mu), "--out", str(model), "--overwrite"]) == 2
    assert main(["predict", str(model), str(h5mu), "--out", str(model / "sub")]) == 2
    assert (proj / "NOTES.md").read_text() == "notes"


def test_out_is_checked_before_any_work(tmp_path: Path, h5mu: Path, monkeypatch, capsys) -> None:
    """Finding 6: --out /proc/x failed after the full training; --out . with EBUSY.
    Finding 12: bench --device gpu failed only after loading the data."""
    import balmm.data.io

    def no_loading(*a, **k):
        raise AssertionError("data were read before the output was checked")

    monkeypatch.setattr(balmm.data.io, "load_inputs", no_loading)
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["train", str(h5mu), "--out", "/proc/balmm-x"],
        ["train", str(h5mu), "--out", "."],
        ["train", str(h5mu), "--out", ".."],
        ["profile", str(h5mu), "--out", str(tmp_path)],
        ["bench", str(h5mu), "--device", "gpu", "--out", "b"],
        ["train", str(h5mu), "--device", "gpu", "--out", "t"],
        ["predict", "m", str(h5mu), "--device", "tpu", "--out", "p"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and ("--device" in err or "--out" in err or "balmm-x" in err
                                           or str(tmp_path) in err), err  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == []


def test_file_outputs_are_replaced_only_with_overwrite(tmp_path: Path, h5mu: Path) -> None:
    out = tmp_path / "d.h5mu"
    out.write_text("precious")
    assert main(["simulate", "--out", str(out), "-n", "60", "--features", "5"]) == 2
    assert main(["convert", str(h5mu), "--out", str(out)]) == 2
    assert out.read_text() == "precious"
    assert main(["convert", str(h5mu), "--out", str(out), "--overwrite"]) == 0
    assert out.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5mu"]


def test_crash_log_goes_beside_out(tmp_path: Path, h5mu: Path, monkeypatch, capsys) -> None:
    """Finding 13: the crash log went to node-local /tmp."""
    import balmm.data.io

    def boom(*a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(balmm.data.io, "load_inputs", boom)
    out = tmp_path / "jobs" / "run"
    assert main(["train", str(h5mu), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    logs = list((tmp_path / "jobs").glob("balmm-crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err.replace("\n", "")
    assert "RuntimeError: injected" in logs[0].read_text()
    assert not out.exists() and not (tmp_path / "jobs" / ".run.partial").exists()


# ----------------------------------------------------------------------------- processes
def test_second_run_into_the_same_out_is_refused(tmp_path: Path, h5mu: Path) -> None:
    """Finding 5: two runs into one --out both exited 0 and the last writer won."""
    first, _ = _start(["train", str(h5mu), "--out", "run", *FAST], tmp_path, "load")
    try:
        second = _cli(["train", str(h5mu), "--out", "run", *FAST], tmp_path)
        assert second.returncode == 2
        line = _lines(second.stderr)
        assert len(line) == 1 and f"PID {first.pid} on {socket.gethostname()}" in line[0]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert first.returncode == 143
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize(("sig", "code", "fmt"), [(signal.SIGTERM, 143, "text"),
                                                  (signal.SIGINT, 130, "json")])  # fmt: skip
def test_signal_stops_cleanly_with_one_line(tmp_path, h5mu, sig, code, fmt) -> None:
    """Finding 3: SIGTERM gave no log line and left a temp folder; SIGINT had no line."""
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"command": "train"}))  # an older complete run
    (out / "metrics.json").write_text("old")
    args = ["--log-format", fmt, "train", str(h5mu), "--out", "run", *FAST]
    proc, _ = _start(args, tmp_path, "stage2")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    name = signal.Signals(sig).name
    hits = [ln for ln in _lines(err) if "interrupted" in ln]
    assert len(hits) == 1 and f"interrupted ({name})" in hits[0], err
    if fmt == "json":
        assert json.loads(hits[0])["message"] == f"interrupted ({name})"
    assert (out / "metrics.json").read_text() == "old"  # the older output is intact
    assert not [p for p in os.listdir(tmp_path) if p not in ("run", ".run.partial")]
    partial = tmp_path / ".run.partial"
    assert not partial.exists() or _looks_complete(partial) == []


def test_sigkill_leftovers_are_swept_by_the_next_run(tmp_path: Path, h5mu: Path) -> None:
    """Finding 3: SIGKILL stranded .OUT.tmp-* folders that nothing ever swept."""
    proc, _ = _start(["train", str(h5mu), "--out", "run", *FAST], tmp_path, "write")
    proc.kill()
    proc.wait(30)
    (tmp_path / ".run.tmp-abcd1234").mkdir()  # what older balmm versions left
    (tmp_path / ".run.tmp-abcd1234" / "metrics.json").write_text("{}")
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / ".run.partial" / MARKER).exists()
    done = _cli(["train", str(h5mu), "--out", "run", *FAST], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "removing" in done.stderr and ".run.tmp-abcd1234" in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["run"]
    assert json.loads((tmp_path / "run" / MARKER).read_text())["command"] == "train"
