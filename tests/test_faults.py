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
    assert "which this run reads" in capsys.readouterr().err
    assert main(["predict", str(model), str(h5mu), "--out", str(model / "sub")]) == 2
    assert "which this run reads" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "no"), str(h5mu), "--out", str(tmp_path / "p")]) == 2
    assert "not a balmm model bundle" in capsys.readouterr().err
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
def test_second_run_into_the_same_out_is_refused(tmp_path: Path, h5mu: Path, capsys) -> None:
    """Finding 5: two runs into one --out both exited 0 and the last writer won."""
    first, _ = _start(["train", str(h5mu), "--out", "run", *FAST], tmp_path, "load")
    try:
        assert main(["train", str(h5mu), "--out", str(tmp_path / "run"), *FAST]) == 2
        line = _lines(capsys.readouterr().err)
        assert len(line) == 1 and f"PID {first.pid} on {socket.gethostname()}" in line[0]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert first.returncode == 143
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize(("sig", "code", "fmt", "point"), [
    (signal.SIGTERM, 143, "text", "stage1:a"),
    (signal.SIGINT, 130, "json", "stage2"),
])  # fmt: skip
def test_signal_stops_cleanly_with_one_line(tmp_path, h5mu, sig, code, fmt, point) -> None:
    """Finding 3: SIGTERM gave no log line and left a temp folder; SIGINT had no line."""
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"command": "train"}))  # an older complete run
    (out / "metrics.json").write_text("old")
    args = ["--log-format", fmt, "train", str(h5mu), "--out", "run", *FAST]
    proc, _ = _start(args, tmp_path, point)
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


def test_sigkill_leftovers_are_swept_by_the_next_run(tmp_path: Path, h5mu: Path, capsys) -> None:
    """Finding 3: SIGKILL stranded .OUT.tmp-* folders that nothing ever swept. Killed at
    the worst moment (complete, marked, not yet renamed): no visible output appears."""
    proc, _ = _start(["train", str(h5mu), "--out", "run", *FAST], tmp_path, "commit")
    proc.kill()
    proc.wait(30)
    assert sorted(os.listdir(tmp_path)) == [".run.partial", "run.lock"]
    (tmp_path / ".run.tmp-abcd1234").mkdir()  # what older balmm versions left
    (tmp_path / ".run.tmp-abcd1234" / "metrics.json").write_text("{}")
    assert main(["train", str(h5mu), "--out", str(tmp_path / "run"), *FAST]) == 0
    err = capsys.readouterr().err
    assert "removing" in err and ".run.tmp-abcd1234" in err and ".run.partial" in err
    assert sorted(os.listdir(tmp_path)) == ["run"]
    assert json.loads((tmp_path / "run" / MARKER).read_text())["command"] == "train"


# ----------------------------------------------------------------------------- inputs
def _named_tables(folder: Path, n: int = 40, n_feat: int = 6) -> list[str]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    ids = [f"s{i:03d}" for i in range(n)]
    specs = []
    for name in ("a", "b"):
        df = pd.DataFrame(rng.normal(size=(n, n_feat)), index=pd.Index(ids, name="id"),
                          columns=[f"{name}{j}" for j in range(n_feat)])  # fmt: skip
        df.to_csv(folder / f"{name}.csv")
        specs.append(f"{name}={folder / f'{name}.csv'}")
    pd.DataFrame({"y": ["u", "v"] * (n // 2)}, index=pd.Index(ids, name="id")).to_csv(
        folder / "y.csv"
    )
    return specs


def test_text_input_cap_names_file_and_variable(tmp_path, monkeypatch, capsys) -> None:
    """Finding 7: a 593 KB .csv.gz expanded to 2.2 GB RSS before any check."""
    import gzip

    bomb = tmp_path / "big.csv.gz"
    row = ",".join(["0"] * 500) + "\n"
    with gzip.open(bomb, "wt") as fh:
        fh.write("id," + ",".join(f"f{j}" for j in range(500)) + "\n")
        for i in range(2200):  # ~2.2 MB of text, a few KB compressed
            fh.write(f"s{i}," + row)
    assert bomb.stat().st_size < 100_000
    monkeypatch.setenv("BALMM_MAX_TEXT_MB", "1")
    assert main(["inspect", f"a={bomb}", "--allow-unlabelled"]) == 2
    err = capsys.readouterr().err
    assert "big.csv.gz" in err and "BALMM_MAX_TEXT_MB" in err and "Traceback" not in err
    monkeypatch.setenv("BALMM_MAX_TEXT_MB", "0")  # no cap
    assert main(["inspect", f"a={bomb}", "--allow-unlabelled"]) == 0


def test_labels_and_headers_are_checked_before_the_matrices(tmp_path, monkeypatch, capsys):
    """Finding 7: labels and headers were checked only after whole matrices were read."""
    import balmm.data.readers as readers

    specs = _named_tables(tmp_path)
    calls: list[str] = []
    real = readers.read_table
    monkeypatch.setattr(
        readers, "read_table", lambda p, *a, **k: calls.append(p) or real(p, *a, **k)
    )
    assert main(["inspect", *specs]) == 2  # no --labels
    assert "no labels found" in capsys.readouterr().err
    assert main(["inspect", *specs, "--labels", str(tmp_path / "y.csv"), "--label-col", "z"]) == 2
    assert "label column 'z' not found" in capsys.readouterr().err
    (tmp_path / "c.csv").write_text("id,x,x\ns000,1,2\n")
    assert main(["inspect", *specs, f"c={tmp_path / 'c.csv'}", "--labels",
                 str(tmp_path / "y.csv")]) == 2  # fmt: skip
    assert "'x'" in capsys.readouterr().err
    assert calls == []  # no matrix was read for any of these
    assert main(["inspect", *specs, "--labels", str(tmp_path / "y.csv")]) == 0
    assert len(calls) == 2


def test_all_nan_row_means_the_modality_is_missing(tmp_path: Path) -> None:
    """Finding 9: an all-NaN row counted as measured and was predicted from medians."""
    import pandas as pd

    from balmm.data.io import load_inputs

    specs = _named_tables(tmp_path)
    a = pd.read_csv(tmp_path / "a.csv", index_col=0)
    a.loc["s003"] = float("nan")
    a.to_csv(tmp_path / "a.csv")
    data = load_inputs(specs, labels=[tmp_path / "y.csv"])
    assert "s003" not in data.mods["a"].obs_names and "s003" in data.mods["b"].obs_names
    assert any("s003" in n for n in data.notes)


def test_thread_default_follows_affinity_cgroup_and_slurm(tmp_path, monkeypatch) -> None:
    """Finding 11: bench used os.cpu_count(): 128 threads on a node with 2 allocated CPUs."""
    import balmm.threads as th

    real_cgroup = th.cgroup_cpus
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: set(range(128)), raising=False)
    monkeypatch.setattr(th, "cgroup_cpus", lambda: None)
    assert th.available_cpus({}) == 128
    assert th.available_cpus({"SLURM_CPUS_PER_TASK": "2"}) == 2
    (tmp_path / "cpu.max").write_text("300000 100000\n")
    assert real_cgroup(tmp_path / "cpu.max") == 3.0
    (tmp_path / "unl").write_text("max 100000\n")
    assert real_cgroup(tmp_path / "unl", (tmp_path / "x", tmp_path / "y")) is None
    monkeypatch.setattr(th, "cgroup_cpus", lambda: 2.5)
    assert th.available_cpus({}) == 3
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert th.available_cpus({"SLURM_CPUS_PER_TASK": "8"}) == 1
    assert th.default_threads(4) == 1


# ----------------------------------------------------------------------------- bundles
@pytest.fixture(scope="module")
def trained(h5mu: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "run"
    old = os.umask(0o022)
    try:
        assert main(["train", str(h5mu), "--out", str(out), *FAST]) == 0
    finally:
        os.umask(old)
    return out


def test_weights_follow_the_umask(trained: Path) -> None:
    """Finding 10: model/weights.safetensors was written 0600."""
    import stat

    for p in (trained / "model").rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def _edited_copy(trained: Path, tmp_path: Path, edit) -> Path:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained / "model", model)
    meta = json.loads((model / "model.json").read_text())
    edit(meta)
    (model / "model.json").write_text(json.dumps(meta))
    return model


@pytest.mark.parametrize(("what", "edit", "needle"), [
    ("dropout", lambda m: m["config"].update(dropout=7.5), "'dropout'"),
    ("type", lambda m: m["config"].update(hidden="big"), "'hidden'"),
    ("n_features", lambda m: m["n_features"].update(a=m["n_features"]["a"] + 3), "n_features.a"),
    ("huge", lambda m: m["config"].update(embed_dim=10**9), "weights.safetensors"),
    ("classes", lambda m: m.update(classes=["only"]), "'classes'"),
])  # fmt: skip
def test_damaged_bundle_is_one_line_naming_file_and_key(
    trained, tmp_path, h5mu, capsys, what, edit, needle
) -> None:
    """Finding 8: dropout = 7.5 was an internal error; a changed n_features a RuntimeError;
    size fields were trusted when allocating."""
    model = _edited_copy(trained, tmp_path, edit)
    assert main(["predict", str(model), str(h5mu), "--out", str(tmp_path / "p")]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and needle in err[0] and "model" in err[0], err
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- bench
BENCH = ["--balancers", "", "--classic", "logreg", "--seeds", "3", "--device", "cpu"]


def _descendants(pid: int) -> set[int]:
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(d.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(p)
    return alive


def test_bench_resumes_after_sigkill_with_identical_tables(tmp_path, h5mu, capsys) -> None:
    """Finding 2: bench kept every unit in memory and wrote once; no --resume."""
    proc, _ = _start(["bench", str(h5mu), *BENCH, "--out", "b"], tmp_path, "unit2")
    proc.kill()  # SLURM's SIGKILL after the grace period
    proc.wait(30)
    units = tmp_path / ".b.partial" / "checkpoints" / "bench"
    assert len(list(units.glob("*-*-classic.json"))) == 2
    assert not (tmp_path / "b").exists() and _looks_complete(tmp_path / ".b.partial") == []
    assert main(["bench", str(h5mu), *BENCH, "--out", str(tmp_path / "b"), "--resume"]) == 0
    assert "2 of 3 units already finished" in capsys.readouterr().err
    assert main(["bench", str(h5mu), *BENCH, "--out", str(tmp_path / "fresh")]) == 0
    for name in ("bench.csv", "summary.csv", "paired.csv", "heads.csv", "bench.md"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["b", "fresh"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_bench_jobs_leave_no_worker_behind(tmp_path: Path, h5mu: Path, sig) -> None:
    """Finding 4: with --jobs an interrupt waited for every unit; a killed parent left
    orphaned workers (about 560 MB each)."""
    args = ["bench", str(h5mu), *BENCH, "--seeds", "4", "--jobs", "2", "--out", "b"]
    proc, _ = _start(args, tmp_path, "unit1")
    workers = _descendants(proc.pid)
    assert workers  # the pool is up
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(workers), "workers outlived their parent"
    assert time.monotonic() - t0 < 30  # pending units were cancelled, not waited for
    assert not (tmp_path / "b").exists()
    if sig == signal.SIGTERM:
        assert len(list((tmp_path / ".b.partial" / "checkpoints" / "bench").glob("*.json"))) >= 2
        assert "interrupted (SIGTERM)" in err
        assert "to continue: balmm bench" in err and "--resume" in err


def test_damaged_bundle_files_are_one_line(trained: Path, tmp_path: Path, h5mu: Path, capsys):
    """Finding 8: a truncated weights file or a damaged preprocessing state is exit 2 too."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained / "model", model)
    weights = model / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # header intact, data cut short
    assert main(["predict", str(model), str(h5mu), "--out", str(tmp_path / "p")]) == 2
    assert "weights.safetensors" in _lines(capsys.readouterr().err)[-1]
    shutil.copy(trained / "model" / "weights.safetensors", weights)
    state = model / "preprocess" / "preprocess.json"
    obj = json.loads(state.read_text())
    obj.pop("max_features")
    state.write_text(json.dumps(obj))
    assert main(["predict", str(model), str(h5mu), "--out", str(tmp_path / "p")]) == 2
    assert "preprocess" in _lines(capsys.readouterr().err)[-1]


def test_corrupt_compressed_input_is_one_line(tmp_path: Path, capsys) -> None:
    import gzip

    bad = tmp_path / "a.csv.gz"
    bad.write_bytes(gzip.compress(b"id,f1\ns1,1\n" * 1000)[:-300] + b"\x00" * 300)
    assert main(["inspect", f"a={bad}", "--allow-unlabelled"]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "a.csv.gz" in err[0]


# ----------------------------------------------------------------------------- train resume
TRAIN_FILES = ("metrics.json", "predictions.csv", "history.jsonl", "model/weights.safetensors")


@pytest.mark.parametrize(("sig", "point"), [(signal.SIGKILL, "stage2"),
                                            (signal.SIGTERM, "stage1:b")])  # fmt: skip
def test_train_resume_is_byte_identical(tmp_path: Path, h5mu: Path, sig, point) -> None:
    """Finding 2: SIGKILL during stage 1 left nothing behind; --resume did not exist."""
    proc, _ = _start(["train", str(h5mu), "--out", "r", *FAST], tmp_path, point)
    proc.send_signal(sig)
    proc.wait(60)
    ckpt = tmp_path / ".r.partial" / "checkpoints"
    assert any(ckpt.iterdir()), "no checkpoint kept"
    assert not (tmp_path / "r").exists()
    assert main(["train", str(h5mu), "--out", str(tmp_path / "r"), "--resume", *FAST]) == 0
    assert main(["train", str(h5mu), "--out", str(tmp_path / "f"), *FAST]) == 0
    for name in TRAIN_FILES:
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "f" / name).read_bytes(), name
