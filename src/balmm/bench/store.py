"""Bench units on disk and in worker processes.

:class:`UnitStore` writes each unit's rows the moment the unit finishes (one JSON file per
unit in the run's checkpoint folder), so a killed or timed-out benchmark resumed with
``--resume`` redoes only the units that had not finished. :func:`run_parallel` runs
units in worker processes that exit with their parent, and on an interrupt or a failure
cancels what is pending and terminates the workers instead of waiting for them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from balmm.errors import InputError
from balmm.outputs import to_json, write_text_atomic

logger = logging.getLogger("balmm")

SPEC_FILE = "bench-spec.json"


class UnitStore:
    """Finished units of one benchmark, one ``seed-fold-method.json`` file each."""

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / SPEC_FILE
        text = to_json(identity, indent=2, sort_keys=True) + "\n"
        if spec.exists():
            if spec.read_text(encoding="utf-8") != text:
                raise InputError(
                    f"{folder}: the finished units there belong to another benchmark (other "
                    "data, options, shard or balmm version); rerun without --resume"
                )
        else:
            write_text_atomic(spec, text)

    def _path(self, unit: Any) -> Path:
        return self.folder / f"{unit.seed}-{unit.fold}-{unit.method}.json"

    def load(self, unit: Any) -> tuple[list[dict[str, Any]], float] | None:
        """The stored rows and seconds of ``unit``, or None when it has not finished."""
        try:
            obj = json.loads(self._path(unit).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:  # written atomically, so only a foreign file can be damaged
            return None
        return obj["rows"], float(obj["seconds"])

    def save(self, unit: Any, rows: list[dict[str, Any]], seconds: float) -> None:
        write_text_atomic(self._path(unit), to_json({"rows": rows, "seconds": seconds}) + "\n")


# ----------------------------------------------------------------------------- workers
def _exit_with_parent(parent: int) -> None:
    """Make this worker die with its parent: PR_SET_PDEATHSIG on Linux, and a watchdog
    thread on the parent PID everywhere (a SIGKILLed parent cannot clean up)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="balmm-parent-watch", daemon=True).start()


def _init(parent: int, init: Callable[..., None], args: tuple) -> None:
    # Ctrl-C and a batch scheduler's SIGTERM reach every process of the job: the parent
    # alone decides what to stop (it kills the workers; they die with it anyway)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent(parent)
    init(*args)


def _terminate(pool: ProcessPoolExecutor) -> None:
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:  # a unit has nothing worth saving: finished ones are already stored
        with contextlib.suppress(Exception):
            p.kill()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(5)


def run_parallel(
    units: list[Any],
    jobs: int,
    init: Callable[..., None],
    init_args: tuple,
    work: Callable[[Any], Any],
) -> Iterator[Any]:
    """Yield ``work(unit)`` results as they finish, from ``jobs`` spawned processes.

    An exception here or in a unit, or the generator being closed (an interrupt in the
    caller), cancels the pending units and terminates the workers at once.
    """
    ctx = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init,
                               initargs=(os.getpid(), init, init_args))  # fmt: skip
    try:
        pending = {pool.submit(work, u) for u in units}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    except BaseException:
        _terminate(pool)
        raise
    pool.shutdown(wait=True)
