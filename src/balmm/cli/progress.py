"""Progress for the CLI: a rich bar on a terminal, periodic log lines in batch jobs."""

from __future__ import annotations

import logging
import time
from typing import Any

from balmm.cli.console import err_console
from balmm.cli.state import state
from balmm.log import is_tty
from balmm.testpoints import pause_point

logger = logging.getLogger("balmm")


def _fmt_fields(fields: dict[str, Any]) -> str:
    parts = []
    for k, v in fields.items():
        parts.append(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


class RichProgress:
    """Live progress bars with the latest figures beside each bar."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, key: str, description: str, total: int | None = None) -> None:
        pause_point(key)
        self._tasks[key] = self._progress.add_task(description, total=total, info="")

    def update(self, key: str, advance: int = 1, **fields: Any) -> None:
        if key in self._tasks:
            self._progress.update(self._tasks[key], advance=advance, info=_fmt_fields(fields))

    def finish(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            t = self._progress.tasks[task]
            if t.total is not None:
                self._progress.update(task, completed=t.total)


class LogProgress:
    """One log line at start and end of each task, and at most one every ``every_s`` seconds."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._tasks: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start(self, key: str, description: str, total: int | None = None) -> None:
        pause_point(key)
        now = time.monotonic()
        self._tasks[key] = {"desc": description, "total": total, "done": 0, "t0": now, "last": now}
        logger.info("%s: started", description, extra={"task": key, "total": total})

    def update(self, key: str, advance: int = 1, **fields: Any) -> None:
        t = self._tasks.get(key)
        if t is None:
            return
        t["done"] += advance
        now = time.monotonic()
        if now - t["last"] >= self.every_s:
            t["last"] = now
            of = f"/{t['total']}" if t["total"] else ""
            logger.info(
                "%s: %d%s %s",
                t["desc"],
                t["done"],
                of,
                _fmt_fields(fields),
                extra={"task": key, "done": t["done"], **fields},
            )

    def finish(self, key: str) -> None:
        t = self._tasks.pop(key, None)
        if t is not None:
            logger.info(
                "%s: done in %.1f s",
                t["desc"],
                time.monotonic() - t["t0"],
                extra={"task": key, "seconds": round(time.monotonic() - t["t0"], 3)},
            )


def make_progress() -> RichProgress | LogProgress:
    """Rich bars on an interactive terminal with text logs; log lines otherwise."""
    if is_tty() and state.log_format == "text" and state.verbosity >= 0:
        return RichProgress()
    return LogProgress()
