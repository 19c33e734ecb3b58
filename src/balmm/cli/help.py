"""How the commands' --help reads: no type metavar on flags, docstrings reflowed.

Typer prints a ``<bool>`` type beside every flag (``--quiet``, ``--help``) although a flag
takes no value, and keeps the single line breaks of a docstring's later paragraphs, so a
source-wrapped sentence breaks mid-line in the terminal. Both are fixed here once, for the
group and for every command (``@app.command(cls=BalmmCommand)``).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from typer.core import TyperCommand, TyperGroup


def reflow(doc: str | None) -> str | None:
    """Join the source line breaks inside prose paragraphs; keep indented blocks (examples)
    line by line."""
    if not doc:
        return doc
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    out = []
    for par in paragraphs:
        lines = par.split("\n")
        if all(ln.startswith(" ") for ln in lines if ln.strip()):
            out.append(par)
        else:
            out.append(" ".join(ln.strip() for ln in lines))
    return "\n\n".join(out)


def _readable(params: list[Any]) -> list[Any]:
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""  # a flag takes no value: show no type
        elif p.param_type_name == "argument" and p.metavar:
            # Its metavar (INPUTS) says it all: no <list[str]> type column. Typer >= 0.29 asks
            # display_type_rich, older releases the type's get_metavar (on a copy: types are
            # shared).
            p.display_type_rich = lambda ctx: None
            if hasattr(p, "type"):
                p.type = copy.copy(p.type)
                p.type.get_metavar = lambda *args, **kwargs: ""
    return params


class BalmmCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        return _readable(super().get_params(ctx))


class BalmmGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        return _readable(super().get_params(ctx))
