"""One exception type for a user's mistake, and the argument parser that raises it.

A `UsageError` names the argument or file at fault and what was expected; the CLI
(`omnijax.cli.main`) prints it as one line, `omnijax <command>: <message>`, and exits with
status 2, no traceback. Everything else is a bug and keeps its traceback. Set
`OMNIJAX_DEBUG=1` (or pass `--debug` to `omnijax`) to see the traceback of a UsageError too.

Commands validate every argument and input file before they write anything, so a
UsageError never leaves a half-written output behind.
"""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

EXIT_USAGE = 2


class UsageError(Exception):
    """A user's mistake: a missing file, a typo in an argument or config key, unusable input."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def require_file(path: str, what: str) -> str:
    """`path` if it is a readable file, else a UsageError naming `what` and the path."""
    if not path:
        raise UsageError(f"{what}: no path given")
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path!r} is not readable")
    return path


def require_dir(path: str, what: str) -> str:
    """`path` if it is an existing directory, else a UsageError naming `what` and the path."""
    if not path:
        raise UsageError(f"{what}: no path given")
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r}: no such directory")
    if not os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a file, expected a directory")
    return path


def debug_enabled() -> bool:
    return os.environ.get("OMNIJAX_DEBUG", "") not in ("", "0", "false", "no")
