"""The Typer application, global options and the mapping of errors to exit codes."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import signal
import sys
import tempfile
import traceback
from enum import StrEnum
from typing import Annotated

import typer
from typer.exceptions import Abort, Exit, TyperException

from balmm import __version__
from balmm.cli.common import thaw_gc
from balmm.cli.console import err_console
from balmm.cli.help import BalmmGroup
from balmm.cli.state import state
from balmm.errors import InputError
from balmm.log import setup_logging

app = typer.Typer(
    name="balmm",
    help=(
        "Balanced multimodal learning for paired omics.\n\n"
        "Profile how much each assay (mRNA, methylation, miRNA, protein, ...) knows about "
        "the label and about each other, then train models in which no single assay "
        "dominates: cross-modal distillation from strong to weak assays, then balanced "
        "multitask training.\n\n"
        "Typical session: balmm inspect -> balmm profile -> balmm train -> balmm predict. "
        "With no INPUTS every command uses the bundled ROSMAP example. "
        "Help on one command: balmm COMMAND --help.\n\n"
        "Examples:\n\n"
        "  balmm train --out run1                      (the bundled ROSMAP example)\n"
        "  balmm --log-format json profile data.h5mu --out prof\n"
        "  balmm --install-completion                  (tab completion for your shell)"
    ),
    cls=BalmmGroup,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

logger = logging.getLogger("balmm")


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"balmm {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    quiet: Annotated[
        bool, typer.Option("--quiet/--no-quiet", "-q", help="Only warnings and errors on stderr.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose/--no-verbose", "-v", help="Debug messages on stderr.")
    ] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            metavar="text|json",
            help="text: readable (rich on a terminal); json: one JSON object per line on "
            "stderr, for batch-job logs.",
        ),
    ] = LogFormat.text,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    state.verbosity = -1 if quiet else (1 if verbose else 0)
    state.log_format = log_format.value
    setup_logging(state.verbosity, state.log_format)


def _error_line(message: str) -> None:
    if state.log_format == "json":
        logger.error(message)
    else:
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def _write_crash_log() -> str:
    """The traceback, beside --out (node-local /tmp is gone once a batch job ends); the
    working directory, then the temp folder, when that cannot be written."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    places = [os.path.dirname(os.path.abspath(state.out))] if state.out is not None else []
    places += [os.getcwd(), None]
    for place in places:
        try:
            fd, path = tempfile.mkstemp(prefix=f"balmm-crash-{stamp}-", suffix=".log", dir=place)
        except OSError:
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"balmm {__version__}\nargv: {sys.argv}\n\n")
            fh.write(traceback.format_exc())
        return path
    return "(could not be written)"


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised where the program was, so every cleanup runs."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


_received: list[str] = []  # typer turns KeyboardInterrupt into a bare exit code 130


def _on_signal(signum: int, frame: object) -> None:
    # a second signal while cleaning up is ignored: cleanup must finish (SIGKILL still works)
    for sig in EXIT_CODES:
        signal.signal(getattr(signal, sig), signal.SIG_IGN)
    _received.append(signal.Signals(signum).name)
    raise Interrupted(_received[0])


def install_signal_handlers() -> dict[int, object]:
    """SIGTERM (batch schedulers' time limit, scancel) and SIGINT raise :class:`Interrupted`;
    returns the previous handlers (none outside the main thread)."""
    before: dict[int, object] = {}
    for name in EXIT_CODES:
        sig = getattr(signal, name)
        try:
            before[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread
            break
    return before


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``balmm`` command; returns the process exit code."""
    state.out = None
    _received.clear()
    before = install_signal_handlers()
    try:
        return _run(argv)
    finally:
        thaw_gc()
        for sig, handler in before.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _run(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, standalone_mode=False, prog_name="balmm")
    except InputError as exc:
        _error_line(str(exc))
        return 2
    except Exit as exc:
        result = exc.exit_code
    except (Abort, KeyboardInterrupt):
        result = 130
    except TyperException as exc:  # usage errors: typer shows them the click way
        show = getattr(exc, "show", None)
        if show is not None:
            show(file=sys.stderr)
        else:
            _error_line(exc.format_message())
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - last line of defence, logged in full
        path = _write_crash_log()
        _error_line(f"internal error: {type(exc).__name__}: {exc} (full log: {path})")
        return 1
    if _received or (result == 130 and isinstance(result, int)):
        name = _received[0] if _received else "SIGINT"
        _error_line(f"interrupted ({name})")
        return EXIT_CODES[name]
    if isinstance(result, int):
        return result
    return 0
