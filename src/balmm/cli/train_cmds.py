"""Commands: train_cmds."""

from balmm.cli.app import app  # noqa: F401
