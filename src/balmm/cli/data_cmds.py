"""Commands: data_cmds."""

from balmm.cli.app import app  # noqa: F401
