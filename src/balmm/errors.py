"""Exceptions that the CLI maps to exit codes.

Library functions raise these and never print or exit; ``balmm.cli`` turns
:class:`InputError` (and its subclasses) into one clear line and exit code 2.
"""

from __future__ import annotations


class BalmmError(Exception):
    """Base class of every error balmm raises on purpose."""


class InputError(BalmmError, ValueError):
    """Bad input or usage: a file, sample, feature, key or option at fault (exit 2).

    The message must name the thing at fault (path, sample ID, feature, key).
    """


class ConfigError(InputError):
    """Unknown or ill-typed configuration key (exit 2)."""
