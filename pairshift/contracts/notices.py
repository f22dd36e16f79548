"""Notices as they cross the Temporal boundary, and the two activities that deliver them.

A notice is data (kind, title, Markdown text, facts, whether it asks for a decision); channels decide how to
show it (:mod:`pairshift.notices`, :mod:`pairshift.slack`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio import activity

from pairshift.contracts.quality import StageQuality

NoticeKind = Literal[
    "migration_started",
    "deprecation_reminder",
    "eval_summary",
    "approval_requested",
    "approval_reminder",
    "stage_started",
    "stage_passed",
    "stage_quality",
    "decision",
    "promoted",
    "rolled_back",
    "rejected",
    "failed_eval",
    "alias_drift",
    "fallback_rate",
    "info",
]


class Notice(BaseModel):
    """One message about a migration or a deployment, for every channel (log, Slack)."""

    kind: NoticeKind
    deployment: str
    migration: str | None = None
    run_id: str | None = Field(
        None, description="The migration's run (first execution) its decision buttons are for."
    )
    title: str
    text: str = ""
    facts: dict[str, Any] = Field(default_factory=dict)
    asks_decision: bool = False
    stage: int | None = None
    channel: str | None = Field(None, description="Slack channel from the policy; None = log only.")
    links: dict[str, str] = Field(default_factory=dict)
    quality: StageQuality | None = Field(
        None, description="A stage_quality notice's figures (rendered by pairshift.slack.stage_quality)."
    )


class NoticeDelivery(BaseModel):
    """NoticeDeliveryWorkflow's input: the notices a migration had not delivered when it ended."""

    notices: list[Notice]


@activity.defn
def send_notice(notice: Notice) -> list[str]:
    """Send a notice through every channel; returns the channels that failed (it never fails itself)."""
    raise NotImplementedError


@activity.defn
def post_slack_notice(notice: Notice) -> dict[str, Any]:
    """Post ``notice`` to the policy's Slack channel, threaded; ``{"skipped": why}`` when it cannot."""
    raise NotImplementedError
