"""Digests: the migrations one deprecation starts on one day share one channel message and its thread.

A deprecation scan can start a migration for every deployment on a retiring snapshot at once (200 of them
is a real fleet); a thread per migration with its decisions broadcast would post hundreds of messages into
the approvers' channel. So the migrations with reason ``deprecation`` off one model, started on one day (UTC),
form a *digest*: the first of their notices posts the digest message in the channel, every notice of every
member replies in its thread (decision buttons included, one message per migration and stage, as in a
migration's own thread) without broadcasting, and the digest message is edited to say where each stands:
how many evaluate, wait for a decision (named), canary, promoted, rolled back.

Pure where it can be: :func:`digest_message` builds the summary from migration rows; the poster
(:mod:`pairshift.slack.posting`) looks the rows up and edits the message.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

from sqlmodel import Session, select

from pairshift.registry.models import MigrationRow
from pairshift.slack import block_kit as bk

DEPRECATION = "deprecation"
# the order phases are listed in the summary: what needs people first
PHASE_ORDER = (
    "awaiting_approval",
    "notice",
    "evaluating",
    "canary",
    "promoted",
    "rolled_back",
    "rejected",
    "failed_eval",
    "dry_run",
)
MAX_NAMED = 40  # deployments named under "waiting for a decision"; the rest are counted


class Digest(NamedTuple):
    """The migrations off ``model`` that a deprecation started on ``day``."""

    model: str
    day: date

    @property
    def key(self) -> str:
        """The id the digest's thread is stored under (in place of a migration id)."""
        return f"digest:{DEPRECATION}:{self.model}:{self.day.isoformat()}"


def _model_of(pair: str) -> str:
    return pair.split("+", 1)[1] if "+" in pair else pair


def _day_of(at: datetime) -> date:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).date()


def digest_of(row: MigrationRow | None) -> Digest | None:
    """The digest a migration belongs to: only migrations a deprecation started are grouped."""
    if row is None or row.reason != DEPRECATION:
        return None
    return Digest(model=_model_of(row.from_pair), day=_day_of(row.started_at))


def members(session: Session, digest: Digest) -> list[MigrationRow]:
    """The latest run of each migration in ``digest``."""
    start = datetime.combine(digest.day, time(), UTC)
    rows = session.exec(
        select(MigrationRow)
        .where(
            MigrationRow.reason == DEPRECATION,
            MigrationRow.started_at >= start,
            MigrationRow.started_at < start + timedelta(days=1),
        )
        .order_by(MigrationRow.started_at)
    ).all()
    latest: dict[str, MigrationRow] = {}
    for row in rows:
        if _model_of(row.from_pair) == digest.model:
            latest[row.workflow_id] = row
    return list(latest.values())


def digest_message(digest: Digest, rows: list[MigrationRow]) -> bk.Message:
    """The digest's channel message: counts per phase, the deployments waiting for a decision named."""
    counts = Counter(row.phase for row in rows)
    waiting = sorted(row.deployment for row in rows if row.phase == "awaiting_approval")
    title = f"Deprecation of {digest.model}: {len(rows)} migration(s) started {digest.day.isoformat()}"
    order = [*PHASE_ORDER, *sorted(set(counts) - set(PHASE_ORDER))]
    tally = ", ".join(f"{counts[phase]} {phase.replace('_', ' ')}" for phase in order if counts[phase])
    blocks = [bk.header(title), bk.section(bk.escape(tally) or "no migration yet")]
    if waiting:
        named = bk.fit_lines([f"• {bk.escape(name)}" for name in waiting[:MAX_NAMED]], bk.MAX_SECTION - 200)
        more = f"\n…and {len(waiting) - MAX_NAMED} more" if len(waiting) > MAX_NAMED else ""
        blocks.append(bk.section(f"*Waiting for a decision ({len(waiting)}):*\n{named}{more}"))
    blocks.append(bk.context("Each migration's notices and decision buttons are in this message's thread."))
    return bk.fit(bk.Message(text=f"{title}: {tally}", blocks=blocks))
