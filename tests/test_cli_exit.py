"""The console entry point ends the process itself (no interpreter teardown): the exit code,
the flushed output and the atexit handlers are those of a normal exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_run_flushes_output_and_runs_atexit_handlers(tmp_path) -> None:
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('handler ran'))\n"
            "sys.stdout.write('unflushed ')\n"
            "sys.argv = ['balmm', '--version']\n"
            "from balmm.cli import run\n"
            "run()\n"
            "print('not reached')\n")  # fmt: skip
    res = _python(code, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("unflushed balmm ")
    assert res.stdout.rstrip().endswith("handler ran")
    assert "not reached" not in res.stdout


def test_run_keeps_the_exit_code_and_the_error_line(tmp_path) -> None:
    code = ("import sys\n"
            "sys.argv = ['balmm', 'train', 'missing.h5mu', '--out', 'o']\n"
            "from balmm.cli import run\n"
            "run()\n")  # fmt: skip
    res = _python(code, tmp_path)
    assert res.returncode == 2
    assert "missing.h5mu" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()
