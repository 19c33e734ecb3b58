"""balmm's command line: thin Typer commands over the library."""

from balmm.cli import bench_cmds, data_cmds, profile_cmd, train_cmds  # noqa: F401  (register)
from balmm.cli.app import app, main

__all__ = ["app", "main", "run"]


def run() -> None:
    """Console-script entry point."""
    import sys

    sys.exit(main())
