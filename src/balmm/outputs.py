"""Safe outputs: nothing lost, nothing half-written, nothing run twice at once.

:func:`open_output` checks ``--out`` before any data is read (never the working
directory or a folder above it, never an input or the model being read, never an
existing folder that is not a complete balmm output of the same command unless
``overwrite``), probes that it can write there, locks ``OUT.lock`` and hands out a
hidden work folder ``.OUT.partial`` beside the output. The run writes there;
:meth:`OutputRun.commit` writes the completion marker and only then puts the work
folder in place of ``OUT``. A failed or interrupted run keeps ``checkpoints/`` for
``--resume`` and removes everything else, so nothing left behind looks complete. The checks
on ``--out`` and the lock are :mod:`balmm.output_checks`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from balmm.errors import InputError
from balmm.output_checks import (
    MARKER,
    OutputLock,
    check_location,
    check_target,
    probe_writable,
    read_marker,
    remove_path,
)
from balmm.testpoints import pause_point

logger = logging.getLogger("balmm")

RUN_INFO = ".balmm-run.json"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, **kwargs: Any) -> str:
    """JSON text of ``obj``; numpy scalars/arrays and paths are converted, NaN becomes null."""
    return json.dumps(_nan_to_none(obj), default=_json_default, allow_nan=False, **kwargs)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float | np.floating) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _nan_to_none(obj.tolist())
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the usual umask-based mode,
    so collaborators on a shared cluster can read the outputs as with any other file."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block
    succeeds (the temporary file is removed otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN as null) through a temporary file."""
    return write_text_atomic(path, to_json(obj, indent=2) + "\n")


class OutputRun:
    """One run's output: it writes into ``work`` and :meth:`commit` puts that at ``path``."""

    path: Path
    work: Path
    checkpoints: Path
    resume: bool
    command: str

    def __init__(self, path: Path, command: str, *, overwrite: bool, resume: bool, kind: str):
        self.path = path
        self.command = command
        self.kind = kind
        self.overwrite = overwrite
        suffix = "".join(path.suffixes) if kind == "file" else ""
        self.work = path.parent / f".{path.name}.partial{suffix}"
        self.checkpoints = self.work / "checkpoints"
        self.resume = resume
        self.committed = False

    # -- start
    def _sweep(self) -> None:
        """Remove what dead runs left beside the output (we hold the lock: nothing is live),
        and restore an older output that a kill caught in the middle of being replaced."""
        name = re.escape(self.path.name)
        work = re.escape(self.work.name)
        stale = re.compile(
            rf"^\.{name}\.(tmp-[A-Za-z0-9_]{{8}}|[A-Za-z0-9_]{{8}}\.tmp(\.h5mu)?)$"
            rf"|^\.{work}\.[A-Za-z0-9_]{{8}}\.tmp(\.h5mu)?$"
        )
        old = re.compile(rf"^\.{name}\.old-\d+$")
        parent = self.path.parent
        olds = []
        for entry in sorted(os.listdir(parent)):
            p = parent / entry
            if stale.match(entry):
                logger.info("removing %s, left by an interrupted run", p)
                remove_path(p)
            elif old.match(entry):
                olds.append(p)
        for p in olds:
            if not os.path.lexists(self.path) and (self.kind == "file" or read_marker(p)):
                logger.warning("restoring %s from %s (its replacement was interrupted)",
                               self.path, p)  # fmt: skip
                os.replace(p, self.path)
            else:
                logger.info("removing %s, left by an interrupted run", p)
                remove_path(p)

    def _prepare_work(self) -> None:
        if self.kind == "file":
            if os.path.lexists(self.work):
                logger.info("removing %s, left by an interrupted run", self.work)
                remove_path(self.work)
            if self.resume:
                logger.warning("--resume: %s is written in one step; starting it afresh", self.path)
            return
        info = None
        if self.work.is_dir():
            try:
                info = json.loads((self.work / RUN_INFO).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                info = None
        has_ckpt = self.checkpoints.is_dir() and any(self.checkpoints.iterdir())
        if self.resume and info is not None and has_ckpt:
            if info.get("command") != self.command:
                raise InputError(
                    f"{self.work}: holds an interrupted `balmm {info.get('command')}` run, "
                    f"not `balmm {self.command}`; run without --resume to discard it"
                )
            for p in self.work.iterdir():  # only checkpoints survive: outputs are redone
                if p.name not in ("checkpoints", RUN_INFO):
                    remove_path(p)
            logger.info("resuming from the checkpoints in %s", self.checkpoints)
            return
        if os.path.lexists(self.work):
            logger.info(
                "removing %s, left by an interrupted run%s", self.work,
                " (its checkpoints: rerun with --resume to keep them)" if has_ckpt else "",
            )  # fmt: skip
            remove_path(self.work)
        if self.resume:
            logger.warning("--resume: nothing to resume for %s; starting from the beginning",
                           self.path)  # fmt: skip
            self.resume = False
        self.work.mkdir()
        self.checkpoints.mkdir()
        write_json_atomic(self.work / RUN_INFO, {"command": self.command})

    # -- end
    def commit(self) -> Path:
        """Mark ``work`` complete, drop its checkpoints and put it in place of ``path``
        (an older output is replaced only now); return ``path``."""
        if self.committed:
            return self.path
        check_target(self.path, self.command, self.overwrite, self.kind)
        if self.kind == "dir":
            from balmm import __version__

            with contextlib.suppress(FileNotFoundError):
                (self.work / RUN_INFO).unlink()
            write_json_atomic(self.work / MARKER, {
                "command": self.command,
                "version": __version__,
                "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            })  # fmt: skip
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        elif not self.work.exists():
            raise FileNotFoundError(f"{self.work}: nothing was written")
        pause_point("commit")
        if os.path.lexists(self.path):
            old = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
            os.replace(self.path, old)
            os.replace(self.work, self.path)
            remove_path(old)
        else:
            os.replace(self.work, self.path)
        self.committed = True
        return self.path

    def _abandon(self, failed: bool) -> None:
        """After a failure: keep checkpoints for --resume, remove every other partial output."""
        if not os.path.lexists(self.work):
            return
        has_ckpt = self.checkpoints.is_dir() and any(self.checkpoints.iterdir())
        if self.kind == "dir" and has_ckpt:
            for p in self.work.iterdir():
                if p.name not in ("checkpoints", RUN_INFO):
                    remove_path(p)
            if failed:
                logger.warning(
                    "checkpoints kept in %s: rerun the same command with --resume to continue",
                    self.checkpoints,
                )
        else:
            remove_path(self.work)


@contextlib.contextmanager
def open_output(
    out: str | os.PathLike[str],
    command: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    protect: Iterable[str | os.PathLike[str]] = (),
    kind: str = "dir",
) -> Iterator[OutputRun]:
    """Check, probe and lock the output ``out`` of ``balmm COMMAND``; yield its :class:`OutputRun`.

    Raises :class:`InputError` (one line naming the path) before any work when ``out`` is
    the working directory or above it, is/contains/lies inside a ``protect``-ed path (the
    run's inputs), is an existing non-empty folder that is not a complete output of the
    same command (unless ``overwrite``), cannot be written, or is locked by another run.
    ``kind="file"``: a single-file output, replaced only with ``overwrite``.
    """
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
    path = Path(out)
    check_location(path, protect)
    if path.name in ("", ".", ".."):
        raise InputError(f"{out}: not a valid output name")
    check_target(path, command, overwrite, kind)
    probe_writable(path.parent, path)
    lock = OutputLock(path.parent / f"{path.name}.lock", path)
    run = OutputRun(path, command, overwrite=overwrite, resume=resume, kind=kind)
    try:
        check_target(path, command, overwrite, kind)  # again, now that we hold the lock
        run._sweep()
        run._prepare_work()
        try:
            yield run
        except BaseException:
            run._abandon(failed=True)
            raise
        if not run.committed:
            run._abandon(failed=False)
    finally:
        lock.release()


@contextlib.contextmanager
def output_dir(
    out: str | os.PathLike[str] | OutputRun, command: str, *, overwrite: bool = False
) -> Iterator[Path]:
    """Yield the folder to write the outputs of ``balmm COMMAND`` into and commit it when the
    block succeeds. ``out`` is an :class:`OutputRun` already opened by the caller (the CLI
    does so before reading any data) or a path, opened here with :func:`open_output`."""
    if isinstance(out, OutputRun):
        yield out.work
        out.commit()
        return
    with open_output(out, command, overwrite=overwrite) as run:
        yield run.work
        run.commit()


def output_path(out: str | os.PathLike[str] | OutputRun) -> Path:
    """The final path of an output given as a path or an :class:`OutputRun`."""
    return out.path if isinstance(out, OutputRun) else Path(out)
