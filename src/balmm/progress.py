"""Progress reporting without printing.

Library functions take a :class:`Progress` (default :data:`NULL_PROGRESS`) and
report through it; the CLI supplies a rich progress bar on a terminal or plain
/ JSON log lines in batch jobs.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    def start(self, key: str, description: str, total: int | None = None) -> None:
        """Begin a task (a stage, a loop over epochs, bootstrap replicates, ...)."""

    def update(self, key: str, advance: int = 1, **fields: Any) -> None:
        """Advance a task; ``fields`` are live figures (e.g. ``val_f1=0.81``)."""

    def finish(self, key: str) -> None:
        """End a task."""


class _NullProgress:
    def start(self, key: str, description: str, total: int | None = None) -> None:
        pass

    def update(self, key: str, advance: int = 1, **fields: Any) -> None:
        pass

    def finish(self, key: str) -> None:
        pass


NULL_PROGRESS: Progress = _NullProgress()
