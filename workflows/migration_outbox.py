"""The outbox of MigrationWorkflow: its audit log and notices, drained by background tasks, and the activity
options every part of the workflow uses.

Audit events and notices are queued by the workflow and by its message handlers (which cannot run activities
themselves) and written by two background tasks, so a slow or failing channel delays notices, never the
migration or its audit log. Deterministic like the workflow: no I/O here, only activities.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.migration import AuditBatch, AuditIn, HistoryEvent, record_audit_events
    from pairshift.contracts.notices import Notice, NoticeDelivery, post_slack_notice, send_notice
    from pairshift.contracts.quality import StageQuality
    from workflows.notice_delivery import NoticeDeliveryWorkflow
    from workflows.notices import NOTICE, SLACK

# Since OUTBOX_PATCH: a handover never waits on the notice channels (Slack may retry for an hour): undelivered
# notices and unwritten audit events travel with it; the end gives its last notices NOTICE_GRACE and hands
# what is still undelivered to a detached NoticeDeliveryWorkflow; an audit batch the registry refuses is split
# until the refused event is alone, and that one is reported (an audit_refused event, the worker's log)
# instead of blocking the outbox.
OUTBOX_PATCH = "outbox-carries-undelivered"
# How long the end of a migration gives its last notices before handing them to a NoticeDeliveryWorkflow.
NOTICE_GRACE = timedelta(minutes=1)

# Registry writes take milliseconds: a short start-to-close means a worker killed mid-activity costs seconds.
REGISTRY = dict(
    start_to_close_timeout=timedelta(seconds=20),
    retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
)
# Restoring the baseline must eventually succeed, whatever the outage: retry without limit.
COMPENSATE = dict(
    start_to_close_timeout=timedelta(seconds=20),
    retry_policy=RetryPolicy(maximum_attempts=0, maximum_interval=timedelta(minutes=1)),
)
# Since CANCEL_SAFE_PATCH (workflows/migration.py): an activity that moves traffic (or records a migration the
# workflow must then finish) runs to its outcome even when the workflow is cancelled meanwhile, so the
# workflow always knows whether it committed. A plain sync activity never sees the cancel: it completes.
MOVE = dict(**REGISTRY, cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
# The restore, since the patch: retried without limit for a transient failure, refused at once (non-retryable)
# when it cannot succeed, and waited for whatever cancels the workflow.
RESTORE = dict(**COMPENSATE, cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
# The terminal record, since the patch: one terminal phase whatever fails, so it retries until the registry
# answers (a non-retryable refusal is audited as record_failed instead).
FINAL = dict(
    start_to_close_timeout=timedelta(seconds=20),
    retry_policy=RetryPolicy(maximum_attempts=0, maximum_interval=timedelta(minutes=1)),
    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
)
# An audit batch (since OUTBOX_PATCH): a registry outage of minutes is retried; a batch still refused after
# that (or refused for good: AuditRefused) is split: one bad event cannot hold back the others or the close.
AUDIT = dict(
    start_to_close_timeout=timedelta(seconds=20),
    retry_policy=RetryPolicy(
        maximum_attempts=10,
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=["AuditRefused"],
    ),
)
# A gate check reads the registry: it outlasts an outage of minutes while the stage holds its split (missing
# data is neither a breach nor a pass); a check that cannot work for longer ends the canary: it rolls back.
GATE = dict(
    start_to_close_timeout=timedelta(seconds=60),
    schedule_to_close_timeout=timedelta(minutes=15),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)


class MigrationOutbox:
    """Mixed into MigrationWorkflow: expects ``req``, ``plan``, ``history`` and ``_origin_run_id``."""

    def _init_outbox(self) -> None:
        self._audit: list[AuditIn] = []
        self._notices: list[Notice] = []
        self._seq = 0
        self._closing = False
        self._outbox_carry = False  # OUTBOX_PATCH (MigrationWorkflow.run asks it once, at the start)

    def _start_outbox(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self._drain_audit()), asyncio.create_task(self._drain_notices())]

    def _event(
        self,
        event: str,
        detail: str = "",
        *,
        actor: str | None = None,
        channel: str | None = None,
        stage: int | None = None,
        accepted: bool = True,
    ) -> None:
        now = workflow.now()
        self.history.append(HistoryEvent(at=now, event=event, detail=detail))
        del self.history[:-200]  # the query stays small; the audit log keeps everything
        self._seq += 1
        self._audit.append(
            AuditIn(
                key=f"{self._seq}",
                event=event,
                at=now,
                actor=actor,
                channel=channel,
                stage=stage,
                accepted=accepted,
                detail={"detail": detail},
            )
        )

    def _notify(
        self,
        kind: str,
        title: str,
        *,
        text: str = "",
        facts: dict | None = None,
        asks: bool = False,
        stage: int | None = None,
        quality: StageQuality | None = None,
    ) -> None:
        self._notices.append(
            Notice(
                kind=kind,
                deployment=self.req.deployment,
                migration=workflow.info().workflow_id,
                title=title,
                text=text,
                facts=facts or {},
                asks_decision=asks,
                stage=stage,
                channel=self.plan.policy.notice.slack_channel if self.plan else None,
                quality=quality,
            )
        )

    async def _drain_audit(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._audit) or self._closing)
            if not self._audit:
                return
            batch = list(self._audit)  # taken off the queue once written: a cancelled write is carried on
            await self._write_audit(batch)
            del self._audit[: len(batch)]

    async def _write_audit(self, batch: list[AuditIn]) -> None:
        info = workflow.info()
        audit = AuditBatch(workflow_id=info.workflow_id, run_id=self._origin_run_id, events=batch)
        if not self._outbox_carry:
            await workflow.execute_activity(record_audit_events, audit, **COMPENSATE)
            return
        try:
            await workflow.execute_activity(record_audit_events, audit, **AUDIT)
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from None  # the outbox is stopping: the batch is carried
            if len(batch) > 1:  # find the refused event: the others are written
                half = len(batch) // 2
                await self._write_audit(batch[:half])
                await self._write_audit(batch[half:])
                return
            refused = batch[0]
            why = str(exc.cause or exc)
            workflow.logger.error("audit event %s (%s) refused for good: %s", refused.key, refused.event, why)
            if refused.event != "audit_refused":  # reported once; a refused report is only logged
                self._event("audit_refused", f"event {refused.key} ({refused.event}) not written: {why}")

    async def _drain_notices(self) -> None:
        # A separate queue, so a slow or failing channel delays notices, never the migration or its audit log.
        while True:
            await workflow.wait_condition(lambda: bool(self._notices) or self._closing)
            if not self._notices:
                return
            notice = self._notices[
                0
            ]  # taken off the queue once delivered: a cancelled delivery is carried on
            try:
                await workflow.execute_activity(send_notice, notice, **NOTICE)
                if notice.channel:
                    await workflow.execute_activity(post_slack_notice, notice, **SLACK)
            except ActivityError as exc:
                if self._outbox_carry and is_cancelled_exception(exc):
                    raise asyncio.CancelledError() from None  # the outbox is stopping: the notice is carried
                # a channel down for longer than SLACK's window: the worker logged it; the migration goes on
            self._notices.pop(0)

    async def _close(self, outbox: list[asyncio.Task], *, handover: bool = False) -> None:
        if self._outbox_carry:
            return await self._close_without_waiting(outbox, handover=handover)
        self._closing = True
        await asyncio.gather(*outbox)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if getattr(self, "_safe", False):
            await self._flush_audit()

    async def _close_without_waiting(self, outbox: list[asyncio.Task], *, handover: bool) -> None:
        """The close since OUTBOX_PATCH. Notices: delivery stops now, the undelivered ones (a Slack post being
        retried too) stay queued, carried by a handover or handed to a NoticeDeliveryWorkflow at the end.
        Audit: a handover carries what is not written yet (writes are idempotent by key); the end writes
        it."""
        audit_drain, notice_drain = outbox
        if handover:
            await self._stop(notice_drain)
            await self._stop(audit_drain)
            await workflow.wait_condition(workflow.all_handlers_finished)
            return
        self._closing = True  # the drains return once their queues are empty
        try:  # a healthy channel delivers the last notices in seconds; a failing one is not waited for
            await workflow.wait_condition(notice_drain.done, timeout=NOTICE_GRACE)
        except TimeoutError:
            await self._stop(notice_drain)
        await audit_drain
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._flush_audit()
        if self._notices:
            info = workflow.info()
            await workflow.start_child_workflow(
                NoticeDeliveryWorkflow.run,
                NoticeDelivery(notices=self._notices),
                id=f"{info.workflow_id}-notices-{info.run_id[:8]}",
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
            self._notices = []

    @staticmethod
    async def _stop(task: asyncio.Task) -> None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _flush_audit(self) -> None:
        """Events queued after the drain exited (a signal during the close) are written too (since the
        cancel-safe patch): none is lost at the end of a run or across continue-as-new."""
        while self._audit:
            batch, self._audit = self._audit, []
            if self._outbox_carry:
                await self._write_audit(batch)
                continue
            await workflow.execute_activity(
                record_audit_events,
                AuditBatch(workflow_id=workflow.info().workflow_id, run_id=self._origin_run_id, events=batch),
                **COMPENSATE,
            )

    def _reopen_outbox(self) -> list[asyncio.Task]:
        """Drain again after a close (a handover interrupted by a cancel compensates in this run)."""
        self._closing = False
        return self._start_outbox()
