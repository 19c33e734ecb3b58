"""Checks on an output path before a run starts (never the working directory or a folder
above it, never an input, never a folder that is not a complete output of the same command
unless ``overwrite``; writable), and the lock ``OUT.lock`` held while the run writes.
:mod:`balmm.outputs` uses them to open an output.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from balmm.errors import InputError

MARKER = ".balmm-complete.json"


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def read_marker(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The completion marker of a balmm output folder, or None when it is not complete."""
    try:
        meta = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def check_target(out: Path, command: str, overwrite: bool, kind: str) -> None:
    """Refuse an existing ``out`` that this run may not replace."""
    if not os.path.lexists(out):
        return
    if kind == "file":
        if out.is_dir():
            raise InputError(f"{out}: is a folder; the output must be a file")
        if not overwrite:
            raise InputError(f"{out}: exists; pass --overwrite to replace it")
        return
    if not out.is_dir() or out.is_symlink():
        if not overwrite:
            raise InputError(f"{out}: exists and is not a folder; pass --overwrite to replace it")
        return
    if not any(out.iterdir()):
        return
    meta = read_marker(out)
    if meta is not None and meta.get("command") == command:
        return  # a complete output of the same command: replaced when the new one commits
    if overwrite:
        return
    what = (
        f"is a complete output of `balmm {meta.get('command')}`, not of `balmm {command}`"
        if meta is not None
        else "is a non-empty folder that is not a complete balmm output"
    )
    raise InputError(f"{out}: {what}; choose another --out or pass --overwrite to replace it")


def check_location(out: Path, protect: Iterable[str | os.PathLike[str]]) -> None:
    real = _real(out)
    cwd = _real(os.getcwd())
    if _inside(cwd, real):
        raise InputError(
            f"{out}: is the working directory or a folder above it; choose a new folder for --out"
        )
    for p in protect:
        pr = _real(p)
        if _inside(real, pr) or _inside(pr, real):
            rel = "is" if real == pr else ("lies inside" if _inside(real, pr) else "contains")
            raise InputError(f"{out}: {rel} {p}, which this run reads; choose another --out")


def probe_writable(parent: Path, out: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".balmm-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{out}: cannot write there ({exc.strerror or exc})") from None


class OutputLock:
    """``OUT.lock`` held with flock for the whole run; it records the holder's PID and host."""

    def __init__(self, path: Path, out: Path) -> None:
        self.path = path
        for _ in range(20):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise InputError(f"{path}: cannot lock ({exc.strerror})") from None
                try:
                    holder = path.read_text(encoding="utf-8").split()
                except OSError:
                    holder = []
                who = f"PID {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
                raise InputError(
                    f"{out}: another balmm run is writing there ({who}; lock {path})"
                ) from None
            # the holder before us may have removed the file after we opened it: retry
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                self.fd = fd
                return
            os.close(fd)
        raise InputError(f"{path}: could not take the lock")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
