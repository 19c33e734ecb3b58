"""Shared rich consoles: results go to stdout, logs and progress to stderr."""

from __future__ import annotations

from rich.console import Console

out_console = Console()
err_console = Console(stderr=True)
