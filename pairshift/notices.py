"""Notices about migrations, and the one interface every channel implements (log now; Slack plugs in).

A notice is data (kind, title, Markdown text, facts, whether it asks for a decision); channels decide how
to show it. Sending never fails a migration: a channel that errors is logged and skipped.
"""

from __future__ import annotations

import logging
from typing import Protocol

from pairshift.contracts.notices import Notice, NoticeKind

__all__ = ["Notice", "NoticeKind", "Notifier", "LogNotifier", "register", "notifiers", "send"]

log = logging.getLogger("pairshift.notices")


class Notifier(Protocol):
    """A channel notices go to (the log always; Slack when configured)."""

    name: str

    def send(self, notice: Notice) -> None: ...


class LogNotifier:
    """Notices to the process log (the worker's output) — always on."""

    name = "log"

    def send(self, notice: Notice) -> None:
        log.warning("[%s] %s: %s", notice.kind, notice.deployment, notice.title)


_extra: list[Notifier] = []


def register(notifier: Notifier) -> None:
    """Add a channel (the Slack module registers itself when SLACK_BOT_TOKEN is set)."""
    _extra.append(notifier)


def notifiers() -> list[Notifier]:
    """Every channel a notice goes to: the log first, then the registered ones."""
    return [LogNotifier(), *_extra]


def send(notice: Notice) -> list[str]:
    """Send through every channel; returns the channels that failed (never raises)."""
    failed = []
    for n in notifiers():
        try:
            n.send(notice)
        except Exception as exc:  # noqa: BLE001 - a notice must never fail a migration
            log.error("notifier %s failed for %s: %s", n.name, notice.kind, exc)
            failed.append(n.name)
    return failed
