"""Shared pieces of the CLI: errors with exit codes, JSON vs rich output, the acting user."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output (CI logs, `make demo > file`) gets a wide console instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class CLIError(Exception):
    """A one-line error the CLI prints without a traceback; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def os_user() -> str:
    """The operating-system user: the default identity for --as and for `apply`'s ledger rows."""
    try:
        return os.environ.get("PAIRSHIFT_USER") or getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (the ``--json`` output of every command)."""
    print(json.dumps(value, indent=2, default=str, sort_keys=False))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print rows as a rich table for people."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


async def connect_or_fail():
    """A Temporal client, or a one-line failure (exit 1) saying where the CLI looked."""
    from pairshift.settings import get_settings
    from pairshift.temporal_client import connect

    try:
        return await connect()
    except RuntimeError as exc:
        address = get_settings().temporal_address
        raise CLIError(
            f"cannot reach Temporal at {address} ({exc}); is `pairshift server` running?", code=EXIT_FAILED
        ) from None
