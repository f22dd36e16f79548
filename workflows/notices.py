"""Delivering a notice from a workflow: the log channel, then Slack when the policy names a channel.

A notice never fails the workflow that sends it: a channel down for longer than its retry window is logged
by the worker and skipped.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.notices import Notice, post_slack_notice, send_notice

NOTICE = dict(start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=3))
# Slack may be down or rate limiting: keep retrying (honouring its retry-after) for up to an hour.
SLACK = dict(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=RetryPolicy(maximum_attempts=0, maximum_interval=timedelta(minutes=2)),
)


async def deliver_notice(notice: Notice) -> None:
    """Log channel, then Slack when the policy names a channel; a notice never fails the workflow."""
    try:
        await workflow.execute_activity(send_notice, notice, **NOTICE)
        if notice.channel:
            await workflow.execute_activity(post_slack_notice, notice, **SLACK)
    except ActivityError:
        workflow.logger.warning("notice %s for %s could not be delivered", notice.kind, notice.deployment)
