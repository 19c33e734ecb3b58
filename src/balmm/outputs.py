"""Safe outputs: nothing lost, nothing half-written, nothing run twice at once.

:func:`open_output` checks ``--out`` before any data is read (never the working
directory or a folder above it, never an input or the model being read, never an
existing folder that is not a complete balmm output of the same command unless
``overwrite``), probes that it can write there, locks ``OUT.lock`` and hands out a
hidden work folder ``.OUT.partial`` beside the output. The run writes there;
:meth:`OutputRun.commit` writes the completion marker and only then puts the work
folder in place of ``OUT``. A failed or interrupted run keeps ``checkpoints/`` for
``--resume`` and removes everything else, so nothing left behind looks complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from balmm.errors import InputError
from balmm.testpoints import pause_point

logger = logging.getLogger("balmm")

MARKER = ".balmm-complete.json"
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


# ----------------------------------------------------------------------------- safe --out
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


def _check_target(out: Path, command: str, overwrite: bool, kind: str) -> None:
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


def _check_location(out: Path, protect: Iterable[str | os.PathLike[str]]) -> None:
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


def _probe(parent: Path, out: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".balmm-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{out}: cannot write there ({exc.strerror or exc})") from None


class _Lock:
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


def _rmtree_or_file(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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
                _rmtree_or_file(p)
            elif old.match(entry):
                olds.append(p)
        for p in olds:
            if not os.path.lexists(self.path) and (self.kind == "file" or read_marker(p)):
                logger.warning("restoring %s from %s (its replacement was interrupted)",
                               self.path, p)  # fmt: skip
                os.replace(p, self.path)
            else:
                logger.info("removing %s, left by an interrupted run", p)
                _rmtree_or_file(p)

    def _prepare_work(self) -> None:
        if self.kind == "file":
            if os.path.lexists(self.work):
                logger.info("removing %s, left by an interrupted run", self.work)
                _rmtree_or_file(self.work)
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
                    _rmtree_or_file(p)
            logger.info("resuming from the checkpoints in %s", self.checkpoints)
            return
        if os.path.lexists(self.work):
            logger.info(
                "removing %s, left by an interrupted run%s", self.work,
                " (its checkpoints: rerun with --resume to keep them)" if has_ckpt else "",
            )  # fmt: skip
            _rmtree_or_file(self.work)
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
        _check_target(self.path, self.command, self.overwrite, self.kind)
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
            _rmtree_or_file(old)
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
                    _rmtree_or_file(p)
            if failed:
                logger.warning(
                    "checkpoints kept in %s: rerun the same command with --resume to continue",
                    self.checkpoints,
                )
        else:
            _rmtree_or_file(self.work)


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
    _check_location(path, protect)
    if path.name in ("", ".", ".."):
        raise InputError(f"{out}: not a valid output name")
    _check_target(path, command, overwrite, kind)
    _probe(path.parent, path)
    lock = _Lock(path.parent / f"{path.name}.lock", path)
    run = OutputRun(path, command, overwrite=overwrite, resume=resume, kind=kind)
    try:
        _check_target(path, command, overwrite, kind)  # again, now that we hold the lock
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
