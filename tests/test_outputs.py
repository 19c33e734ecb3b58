"""Safe outputs: complete or absent, never half-written, never replacing what is not ours."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from balmm.errors import InputError
from balmm.outputs import MARKER, open_output, output_dir, to_json, write_json_atomic


def test_failed_run_leaves_no_folder_and_keeps_the_old_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), output_dir(out, "train") as tmp:
        (tmp / "metrics.json").write_text("{}")
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []

    with output_dir(out, "train") as tmp:
        (tmp / "metrics.json").write_text('{"v": 1}')
    with pytest.raises(KeyboardInterrupt), output_dir(out, "train") as tmp:
        (tmp / "metrics.json").write_text('{"v": 2}')
        raise KeyboardInterrupt
    assert json.loads((out / "metrics.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert json.loads((out / MARKER).read_text())["command"] == "train"


def test_a_complete_output_of_the_same_command_is_replaced_only_at_commit(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with output_dir(out, "train") as tmp:
        (tmp / "a.txt").write_text("old")
    with open_output(out, "train") as run:
        (run.work / "a.txt").write_text("new")
        assert (out / "a.txt").read_text() == "old"  # still the old one while running
        run.commit()
    assert (out / "a.txt").read_text() == "new"
    with pytest.raises(InputError, match="not of `balmm profile`"), open_output(out, "profile"):
        pass


def test_failure_keeps_checkpoints_only(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), open_output(out, "train") as run:
        (run.checkpoints / "stage1.pt").write_text("ckpt")
        (run.work / "metrics.json").write_text("{}")
        raise KeyboardInterrupt
    assert not out.exists()
    assert sorted(p.name for p in run.work.iterdir()) == [".balmm-run.json", "checkpoints"]
    with open_output(out, "train", resume=True) as run2:
        assert run2.resume and (run2.checkpoints / "stage1.pt").read_text() == "ckpt"
        run2.commit()
    assert not (out / "checkpoints").exists() and not run.work.exists()


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with output_dir(tmp_path / "run", "train") as tmp:
            write_json_atomic(tmp / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "run" / "m.json").stat().st_mode) == 0o644


def test_json_converts_numpy_and_nan() -> None:
    text = to_json({"x": np.float32(0.5), "n": float("nan"), "a": np.arange(2)})
    assert json.loads(text) == {"x": 0.5, "n": None, "a": [0, 1]}
