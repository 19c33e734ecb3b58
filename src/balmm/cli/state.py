"""Global CLI options, set by the app callback and read by commands."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliState:
    verbosity: int = 0
    log_format: str = "text"


state = CliState()
