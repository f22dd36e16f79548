"""What both providers' batch APIs share on the fake server: a job's clock, line fates, cancel, expiry.

A job's lines are answered when it is created (the sim is deterministic), but they become visible as time
passes, as a real batch's would: over ``batch_delay_ms`` the lines are processed in order (the first
``floor(n * elapsed / delay)`` of them), then the job ends. Each line is given a fate at creation:

- ``ok`` / ``error``: the line's own answer (a refusal of the request itself, e.g. an unknown model, is an
  ``error`` with that provider error); ``batch_failure_rate`` turns a share of would-be answers into a 500
  (drawn from the server's seeded generator, so a run is reproducible);
- ``expire``: ``batch_expire_rate`` of the lines never run, as if the 24 h window ran out first.

A cancel freezes the processed prefix: the rest become ``canceled`` once ``batch_cancel_ms`` have passed (the
job says canceling / cancelling until then). Pure bookkeeping, no I/O: the routes live in :mod:`.batches`
(Anthropic) and :mod:`.openai_batches` (OpenAI Files + Batch API).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

Fate = Literal["ok", "error", "expire"]
Outcome = Literal["succeeded", "errored", "canceled", "expired", "processing"]
Phase = Literal["running", "canceling", "canceled", "ended"]


@dataclass
class JobLine:
    """One request of a job: its id, its fate, and the answer (or provider error body) it will show."""

    custom_id: str
    fate: Fate
    payload: dict[str, Any]  # the success body, or the error's (status, body) as {"status", "body"}
    model: str | None = None


@dataclass
class Job:
    """One provider batch on the fake server (both wires)."""

    id: str
    wire: Literal["anthropic", "openai"]
    created: datetime
    delay: timedelta
    lines: list[JobLine]
    cancel_delay: timedelta = timedelta(0)
    cancel_at: datetime | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # wire-specific: endpoint, file ids, metadata, errors
    polls: int = 0  # status requests seen (GET of the batch)

    @property
    def ends(self) -> datetime:
        return self.created + self.delay

    def _progress(self, now: datetime) -> float:
        if self.delay <= timedelta(0) or now >= self.ends:
            return 1.0
        return max(0.0, (now - self.created) / self.delay)

    def processed(self, now: datetime) -> int:
        """How many lines (in order) have been run by ``now`` (frozen at the cancel)."""
        at = min(now, self.cancel_at) if self.cancel_at is not None else now
        if self.cancel_at is None and at >= self.ends:
            return len(self.lines)
        return math.floor(len(self.lines) * self._progress(at))

    def phase(self, now: datetime) -> Phase:
        if self.cancel_at is not None:
            return "canceled" if now >= self.cancel_at + self.cancel_delay else "canceling"
        return "ended" if now >= self.ends else "running"

    def ended_at(self) -> datetime:
        return self.cancel_at + self.cancel_delay if self.cancel_at is not None else self.ends

    def outcome(self, index: int, now: datetime) -> Outcome:
        """What line ``index`` shows at ``now``."""
        line, phase = self.lines[index], self.phase(now)
        if index < self.processed(now):
            if line.fate == "expire":
                return "expired" if phase in ("ended", "canceled") else "processing"
            return "succeeded" if line.fate == "ok" else "errored"
        return "canceled" if phase == "canceled" else "processing"

    def counts(self, now: datetime) -> dict[Outcome, int]:
        tally: dict[Outcome, int] = {
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
            "processing": 0,
        }
        for i in range(len(self.lines)):
            tally[self.outcome(i, now)] += 1
        return tally

    def expired_any(self) -> bool:
        return self.cancel_at is None and any(line.fate == "expire" for line in self.lines)


def draw_fate(rng: random.Random, failure_rate: float, expire_rate: float) -> Fate | None:
    """``error`` / ``expire`` for a share of lines that would succeed; None keeps the line's own answer."""
    draw = rng.random()
    if draw < failure_rate:
        return "error"
    if draw < failure_rate + expire_rate:
        return "expire"
    return None
