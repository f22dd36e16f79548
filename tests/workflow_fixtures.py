"""Fixtures for workflows whose activities run in this process: a test registry's settings, notices kept.

Activities open the registry named by the process settings and send notices through :mod:`pairshift.notices`,
so these tests point the settings at a SQLite registry and add a channel that keeps every notice. Imported by
tests/test_alias_drift.py and tests/test_deprecation_scan.py (no tests of its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pairshift import notices
from pairshift.settings import get_settings


class CapturedNotices:
    """A notifier channel that keeps what it is sent (``notices``), in order."""

    name = "test"

    def __init__(self) -> None:
        self.notices: list[notices.Notice] = []

    def send(self, notice: notices.Notice) -> None:
        self.notices.append(notice)


@pytest.fixture
def captured_notices(monkeypatch: pytest.MonkeyPatch) -> CapturedNotices:
    """Every notice sent during the test, through the only extra channel (Slack and others left out)."""
    captured = CapturedNotices()
    monkeypatch.setattr(notices, "_extra", [captured])
    return captured


@pytest.fixture
def sqlite_settings(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process settings (activities, CLI) pointed at a fresh SQLite registry; yields its URL."""
    monkeypatch.setenv("PAIRSHIFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PAIRSHIFT_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    yield sqlite_url
    get_settings.cache_clear()
