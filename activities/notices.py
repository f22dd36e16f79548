"""Activities that deliver notices: ``send_notice`` (every registered channel; the log at least) and
``post_slack_notice`` (a Block Kit message in the policy's channel, threaded).

For Slack, retries live here and only here: the WebClient has no retry handlers, and a rate-limited post
raises with ``next_retry_delay`` = Slack's ``Retry-After`` so Temporal waits exactly as long as Slack asked.
5xx and network failures are retried on the workflow's policy; a refusal Slack means for good
(``channel_not_found``, ``invalid_auth``) is logged and returned, because a notice must never fail a
migration.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from temporalio.exceptions import ApplicationError

from pairshift import notices
from pairshift.contracts import implements
from pairshift.contracts import notices as contract
from pairshift.contracts.notices import Notice
from pairshift.registry import open_registry
from pairshift.slack import slack_settings, web_client
from pairshift.slack.posting import SlackNotifier, SlackRetryable

log = logging.getLogger("pairshift.slack")


@implements(contract.send_notice)
def send_notice(notice: Notice) -> list[str]:
    """Send a notice through every channel; never fails (a channel that errors is logged and skipped)."""
    return notices.send(notice)


@implements(contract.post_slack_notice)
def post_slack_notice(notice: Notice) -> dict[str, Any]:
    """Post ``notice``; ``{"skipped": why}`` when Slack is not configured or refused the message for good."""
    settings = slack_settings()
    if settings.bot_token is None:
        return {"skipped": "slack not configured"}
    notifier = SlackNotifier(web_client(settings), open_registry())
    try:
        return notifier.post(notice).model_dump(exclude_defaults=True)
    except SlackRetryable as exc:
        delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
        log.warning(
            "slack notice %s of %s delayed: %s", notice.kind, notice.migration or notice.deployment, exc
        )
        raise ApplicationError(str(exc), type="SlackUnavailable", next_retry_delay=delay) from None
