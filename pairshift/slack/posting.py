"""Posting notices to Slack: a thread per migration and channel; decision messages kept for chat.update.

The first message of a migration starts its thread (``migration_started`` always starts a new one, because a
deployment's migration id repeats across runs); later notices reply in it, and the ones people must see
(decisions asked, outcomes) are also broadcast to the channel. Migrations a deprecation started on one day
off one model share a *digest* instead (:mod:`pairshift.slack.digest`): one channel message, edited to say
where each stands, and every member's notices in its thread, not broadcast. Messages that ask for a decision
are stored, so their buttons can be replaced by the outcome: by the click handler at once, and here when a
stage starts or the migration ends (which also covers decisions made from the CLI or the Temporal UI).

Errors are sorted for the caller (the ``post_slack_notice`` activity): :class:`SlackRetryable` for rate
limits, 5xx and network failures (with Slack's ``Retry-After`` when it gave one), a skipped result for the
4xx answers that retrying cannot fix (``channel_not_found``, ``invalid_auth``...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.error import URLError

from pydantic import BaseModel
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlmodel import select

from pairshift.contracts.notices import Notice
from pairshift.registry.models import MigrationRow, SlackMessage, SlackThread, utcnow
from pairshift.registry.store import Registry
from pairshift.settings import get_settings
from pairshift.slack import block_kit
from pairshift.slack import messages as bk
from pairshift.slack.digest import Digest, digest_message, digest_of, members

log = logging.getLogger("pairshift.slack")

BROADCAST = frozenset(
    {
        "eval_summary",
        "approval_requested",
        "approval_reminder",
        "promoted",
        "rolled_back",
        "rejected",
        "failed_eval",
    }
)
TERMINAL = frozenset({"promoted", "rolled_back", "rejected", "failed_eval"})
# the phase a notice says its migration is in (its phase row may be recorded a moment later)
PHASE_OF_NOTICE = {
    "migration_started": "notice",
    "approval_requested": "awaiting_approval",
    "stage_started": "canary",
    **{kind: kind for kind in TERMINAL},
}
DIGEST_CLAIM_S = 60.0  # a digest message claimed but not posted for this long was lost with its poster


class SlackRetryable(Exception):
    """Slack is rate limiting, failing (5xx) or unreachable: retry later (``retry_after`` s if known)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SlackRejected(Exception):
    """Slack refused the call for good (a 4xx answer such as ``channel_not_found``): retrying cannot help."""


class PostResult(BaseModel):
    """What posting a notice did: channel, message ts and thread, buttons resolved, or why it was skipped."""

    channel_id: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    skipped: str | None = None
    buttons_resolved: int = 0


def call_slack(method: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a WebClient method and sort its failure into retryable / rejected (never leaks the token)."""
    try:
        return method(**kwargs)
    except SlackApiError as exc:
        status = exc.response.status_code
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        if status == 429:
            after = exc.response.headers.get("retry-after") or exc.response.headers.get("Retry-After")
            raise SlackRetryable("slack rate limited", retry_after=float(after) if after else None) from None
        if status >= 500:
            raise SlackRetryable(f"slack answered HTTP {status}") from None
        raise SlackRejected(error or f"HTTP {status}") from None
    except (URLError, OSError) as exc:
        raise SlackRetryable(f"slack unreachable: {type(exc).__name__}") from None


class SlackNotifier:
    """Posts notices (a ``pairshift.notices.Notifier``); keeps threads and decision messages."""

    name = "slack"

    def __init__(
        self, client: WebClient, registry: Registry, *, report_loader: Callable[[str], Any] | None = None
    ) -> None:
        self.client = client
        self.registry = registry
        self.report_loader = report_loader or self._load_report

    def send(self, notice: Notice) -> None:
        """Post ``notice`` (the :class:`pairshift.notices.Notifier` interface)."""
        self.post(notice)

    # ------------------------------------------------------------ posting

    def post(self, notice: Notice) -> PostResult:
        """Post ``notice`` in its migration's thread; raises :class:`SlackRetryable`, returns skips."""
        if not notice.channel:
            return PostResult(skipped="no slack channel in the policy")
        notice = notice.model_copy(update={"links": {**default_links(notice), **notice.links}})
        if notice.asks_decision and notice.migration and notice.run_id is None:
            notice = notice.model_copy(update={"run_id": self._live_run(notice.migration)})
        report = self._report_for(notice)
        message = bk.notice_message(notice, report)
        digest = self._digest(notice)
        thread = self._digest_thread(digest, notice.channel) if digest else self._thread(notice)
        kwargs: dict[str, Any] = dict(
            channel=notice.channel,
            text=message.text,
            blocks=message.blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        if thread is not None:
            kwargs.update(thread_ts=thread.ts, reply_broadcast=notice.kind in BROADCAST and digest is None)
        try:
            resp = call_slack(self.client.chat_postMessage, **kwargs)
        except SlackRejected as exc:
            log.error(
                "slack refused the %s notice of %s in %s: %s (not retried)",
                notice.kind,
                notice.migration or notice.deployment,
                notice.channel,
                exc,
            )
            return PostResult(skipped=str(exc))
        channel_id, ts = resp["channel"], resp["ts"]
        self._remember(notice, message, channel_id, ts, new_thread=thread is None)
        resolved = self._resolve_stale_buttons(notice)
        if digest is not None and notice.kind in PHASE_OF_NOTICE:
            self._refresh_digest(digest, thread, notice)
        return PostResult(
            channel_id=channel_id, ts=ts, thread_ts=thread.ts if thread else ts, buttons_resolved=resolved
        )

    def _live_run(self, migration: str) -> str | None:
        """The run a decision button is for when the notice does not say: the migration's latest run."""
        with self.registry.session() as s:
            return s.exec(
                select(MigrationRow.run_id)
                .where(MigrationRow.workflow_id == migration)
                .order_by(MigrationRow.started_at.desc())
            ).first()

    def _thread(self, notice: Notice) -> SlackThread | None:
        if not notice.migration or notice.kind == "migration_started":
            return None
        with self.registry.session() as s:
            return s.get(SlackThread, (notice.migration, notice.channel))

    # ------------------------------------------------------------ digests

    def _digest(self, notice: Notice) -> Digest | None:
        if not notice.migration:
            return None
        with self.registry.session() as s:
            row = s.exec(
                select(MigrationRow)
                .where(MigrationRow.workflow_id == notice.migration)
                .order_by(MigrationRow.started_at.desc())
            ).first()
            return digest_of(row)

    def _digest_thread(self, digest: Digest, channel: str) -> SlackThread:
        """The digest's message in ``channel``, posted by whichever member's notice comes first.

        The first poster claims the row (ts ``pending``) in one transaction, so concurrent activities on
        several workers post one message; the others raise :class:`SlackRetryable` and are retried once it
        exists. A claim older than :data:`DIGEST_CLAIM_S` (its poster died) is taken over.
        """
        from sqlalchemy.exc import IntegrityError

        with self.registry.session() as s:
            row = s.get(SlackThread, (digest.key, channel))
        if row is not None and row.ts != "pending":
            return row
        if row is not None:
            age = (utcnow() - _aware(row.created_at)).total_seconds()
            if age < DIGEST_CLAIM_S:
                raise SlackRetryable("the digest message is being posted", retry_after=1.0)
            with self.registry.session() as s:
                s.merge(SlackThread(migration=digest.key, channel=channel, channel_id="", ts="pending"))
        else:
            try:
                with self.registry.session() as s:
                    s.add(SlackThread(migration=digest.key, channel=channel, channel_id="", ts="pending"))
            except IntegrityError:
                raise SlackRetryable("the digest message is being posted", retry_after=1.0) from None
        with self.registry.session() as s:
            message = digest_message(digest, members(s, digest))
        try:
            resp = call_slack(
                self.client.chat_postMessage,
                channel=channel,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
        except BaseException:
            with self.registry.session() as s:  # release the claim: the next attempt posts it
                claimed = s.get(SlackThread, (digest.key, channel))
                if claimed is not None and claimed.ts == "pending":
                    s.delete(claimed)
            raise
        with self.registry.session() as s:
            row = SlackThread(
                migration=digest.key, channel=channel, channel_id=resp["channel"], ts=resp["ts"]
            )
            s.merge(row)
        return row

    def _refresh_digest(self, digest: Digest, thread: SlackThread, notice: Notice) -> None:
        """Edit the digest message to say where each member stands (best effort: the next notice redoes)."""
        with self.registry.session() as s:
            rows = members(s, digest)
        phase = PHASE_OF_NOTICE[notice.kind]
        for row in rows:
            if row.workflow_id == notice.migration:
                row.phase = phase  # a copy detached from the session: what the notice says, not yet recorded
        message = digest_message(digest, rows)
        try:
            call_slack(
                self.client.chat_update,
                channel=thread.channel_id,
                ts=thread.ts,
                text=message.text,
                blocks=message.blocks,
            )
        except (SlackRetryable, SlackRejected) as exc:
            log.warning("could not update the digest %s: %s", digest.key, exc)

    def _remember(
        self, notice: Notice, message: block_kit.Message, channel_id: str, ts: str, *, new_thread: bool
    ) -> None:
        if not notice.migration:
            return
        with self.registry.session() as s:
            if new_thread:
                row = s.get(SlackThread, (notice.migration, notice.channel))
                if row is None:
                    row = SlackThread(
                        migration=notice.migration, channel=notice.channel, channel_id=channel_id, ts=ts
                    )
                row.channel_id, row.ts, row.created_at = channel_id, ts, utcnow()
                s.add(row)
            if notice.asks_decision:
                s.merge(
                    SlackMessage(
                        channel_id=channel_id,
                        ts=ts,
                        migration=notice.migration,
                        stage=notice.stage,
                        kind=notice.kind,
                        blocks=message.blocks,
                    )
                )

    # ------------------------------------------------------------ decision messages

    def decision_messages(
        self, migration: str, stage: int | None = None, *, unresolved_only: bool = True
    ) -> list[SlackMessage]:
        """A migration's messages with decision buttons (of one stage, or all; unresolved ones by default)."""
        with self.registry.session() as s:
            q = select(SlackMessage).where(SlackMessage.migration == migration)
            if stage is not None:
                q = q.where(SlackMessage.stage == stage)
            if unresolved_only:
                q = q.where(SlackMessage.resolved == False)  # noqa: E712 - SQL comparison
            return list(s.exec(q))

    def resolve_buttons(
        self, migration: str, stage: int | None, outcome: str, *, skip: tuple[str, str] | None = None
    ) -> int:
        """Replace the buttons of every stored decision message of ``stage`` (None = all) by ``outcome``.

        Best effort: these messages are conveniences (the workflow refuses a stale click anyway), so a failed
        chat.update is logged and the next one is tried.
        """
        done = 0
        for msg in self.decision_messages(migration, stage):
            if skip and (msg.channel_id, msg.ts) == skip:
                self.mark_resolved(msg.channel_id, msg.ts)
                continue
            try:
                call_slack(
                    self.client.chat_update,
                    channel=msg.channel_id,
                    ts=msg.ts,
                    text=outcome,
                    blocks=bk.resolved(msg.blocks, outcome),
                )
            except (SlackRetryable, SlackRejected) as exc:
                log.warning("could not update the decision message %s/%s: %s", msg.channel_id, msg.ts, exc)
                continue
            self.mark_resolved(msg.channel_id, msg.ts)
            done += 1
        return done

    def mark_resolved(self, channel_id: str, ts: str) -> None:
        """Remember that a decision message's buttons were replaced by the outcome."""
        with self.registry.session() as s:
            row = s.get(SlackMessage, (channel_id, ts))
            if row is not None:
                row.resolved = True
                s.add(row)

    def _resolve_stale_buttons(self, notice: Notice) -> int:
        """A stage that started or passed, or a migration that ended, has nothing left to click."""
        if not notice.migration:
            return 0
        if notice.kind in TERMINAL:
            return self.resolve_buttons(notice.migration, None, block_kit.clip(notice.title, 300))
        if notice.kind in ("stage_started", "stage_passed") and notice.stage is not None:
            return self.resolve_buttons(notice.migration, notice.stage, block_kit.clip(notice.title, 300))
        return 0

    # ------------------------------------------------------------ helpers

    def user_email(self, user_id: str) -> str | None:
        """The Slack user's email (needs the ``users:read.email`` scope), or None when Slack does not say."""
        try:
            resp = call_slack(self.client.users_info, user=user_id)
        except (SlackRetryable, SlackRejected) as exc:
            log.warning("users.info for %s failed: %s", user_id, exc)
            return None
        return ((resp.get("user") or {}).get("profile") or {}).get("email")

    def _report_for(self, notice: Notice) -> Any:
        report_id = notice.facts.get("report_id")
        if notice.kind != "eval_summary" or not report_id:
            return None
        try:
            return self.report_loader(str(report_id))
        except Exception as exc:  # noqa: BLE001 - without the report the notice still goes out, as text
            log.warning("eval report %s not available for Slack: %s", report_id, exc)
            return None

    def _load_report(self, report_id: str) -> Any:
        from pairshift.evals import load_report  # the eval engine is only needed for eval summaries

        return load_report(self.registry, report_id)


def _aware(at: Any) -> Any:
    from datetime import UTC

    return at if at.tzinfo else at.replace(tzinfo=UTC)


def default_links(notice: Notice) -> dict[str, str]:
    """The workflow in the Temporal UI and, for eval summaries, the HTML report ``pairshift api`` serves."""
    settings = get_settings()
    links: dict[str, str] = {}
    if notice.facts.get("report_id"):
        links["HTML report"] = bk.report_url(settings.api_url, str(notice.facts["report_id"]))
    if notice.migration:
        links["Temporal UI"] = bk.workflow_url(settings.ui_url, settings.namespace, notice.migration)
    return links
