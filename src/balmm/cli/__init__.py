"""balmm's command line: thin Typer commands over the library."""

# Registration order is the order of `balmm --help`: read -> profile -> train -> bench.
# isort: off
from balmm.cli import data_cmds, profile_cmd, train_cmds, simulate_cmd, bench_cmds  # noqa: F401

# isort: on
from balmm.cli.app import app, main

__all__ = ["app", "main", "run"]


def run() -> None:
    """Console-script entry point."""
    import sys

    sys.exit(main())
