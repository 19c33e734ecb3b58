"""Global CLI options, set by the app callback and read by commands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliState:
    verbosity: int = 0
    log_format: str = "text"
    out: Path | None = None  # the --out of the running command: its crash log goes beside it


state = CliState()
