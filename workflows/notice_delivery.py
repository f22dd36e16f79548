"""NoticeDeliveryWorkflow: delivers the notices a migration had not delivered when it ended.

A migration's end does not wait on its notice channels (Slack may be retried for an hour): since
``workflow.patched("outbox-carries-undelivered")`` it hands what is still queued to this workflow, started
detached (parent close policy ABANDON), which delivers each in order like the migration's own outbox.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.notices import NoticeDelivery
    from workflows.notices import deliver_notice


@workflow.defn
class NoticeDeliveryWorkflow:
    """Deliver each notice (log channel, then Slack when it names a channel); returns how many it handled."""

    @workflow.run
    async def run(self, d: NoticeDelivery) -> int:
        for notice in d.notices:
            await deliver_notice(notice)
        return len(d.notices)
