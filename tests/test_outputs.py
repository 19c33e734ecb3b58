"""Crash-safe output writing: complete or absent, never half-written; readable modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from balmm.outputs import atomic_output_dir, to_json, write_json_atomic


def test_failed_run_leaves_no_folder_and_keeps_the_old_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "metrics.json").write_text("{}")
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []

    with atomic_output_dir(out) as tmp:
        (tmp / "metrics.json").write_text('{"v": 1}')
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out) as tmp:
        (tmp / "metrics.json").write_text('{"v": 2}')
        raise KeyboardInterrupt
    assert json.loads((out / "metrics.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "run") as tmp:
            write_json_atomic(tmp / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "run" / "m.json").stat().st_mode) == 0o644


def test_json_converts_numpy_and_nan() -> None:
    text = to_json({"x": np.float32(0.5), "n": float("nan"), "a": np.arange(2)})
    assert json.loads(text) == {"x": 0.5, "n": None, "a": [0, 1]}
