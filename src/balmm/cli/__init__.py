"""balmm's command line: thin Typer commands over the library."""

import atexit
import contextlib
import os
import sys
from typing import NoReturn

# Registration order is the order of `balmm --help`: read -> profile -> train -> bench.
# isort: off
from balmm.cli import data_cmds, profile_cmd, train_cmds, simulate_cmd, bench_cmds  # noqa: F401

# isort: on
from balmm.cli.app import app, main

__all__ = ["app", "main", "run"]


def run() -> NoReturn:
    """Console-script entry point (``balmm`` and ``python -m balmm``).

    The process ends without the interpreter's teardown: freeing torch's, pandas' and
    scanpy's objects one by one took 1.5-2 s after every command (measured after a small
    ``balmm train``), memory the OS reclaims at once. Before that the ``atexit`` handlers
    run (logging's flush among them) and the standard streams are flushed; every output
    file is already closed and committed when :func:`main` returns."""
    code = main()
    atexit._run_exitfuncs()  # what the teardown would run first, in the same order
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe must not change the exit code
            stream.flush()
    os._exit(code)
