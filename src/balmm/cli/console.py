"""Shared rich consoles (results to stdout, logs and progress to stderr) and the one way a
command prints a table: a rich table on a terminal, plain aligned text in logs and pipes."""

from __future__ import annotations

from collections.abc import Sequence

import typer
from rich.console import Console

out_console = Console()
err_console = Console(stderr=True)


def plain_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], n_left: int = 1
) -> str:
    """``title`` then aligned columns (the first ``n_left`` left-aligned, the rest right)."""
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [title]
    for r in [header, *rows]:
        lines.append(
            "  ".join(
                c.ljust(w) if i < n_left else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def print_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], n_left: int = 1
) -> None:
    """Print a summary table: rich on a terminal (first ``n_left`` columns left-aligned),
    plain text when stdout is not a TTY (batch logs, pipes, grep)."""
    if not out_console.is_terminal:
        typer.echo(plain_table(title, header, rows, n_left))
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < n_left else "right")
    for r in rows:
        table.add_row(*r)
    out_console.print(table)
