"""Commands: profile_cmd."""

from balmm.cli.app import app  # noqa: F401
