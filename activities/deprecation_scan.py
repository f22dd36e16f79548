"""Activities of DeprecationScanWorkflow: plan the day's scan, record the due reminders.

Thin and idempotent: the decisions are :mod:`pairshift.deprecation_plan`'s (pure). A retried activity never
records a reminder twice. Notices are returned to the workflow, which sends them through the same activities
as MigrationWorkflow (``send_notice``, then ``post_slack_notice`` when the policy names a channel).
"""

from __future__ import annotations

from sqlmodel import Session, col, or_, select

from pairshift.contracts import deprecation_scan as contract
from pairshift.contracts import implements
from pairshift.contracts.deprecation_scan import (
    PlannedReminder,
    RemindersInput,
    ScanInput,
    ScanPlan,
    SentReminder,
)
from pairshift.contracts.notices import Notice
from pairshift.deprecation_plan import plan_scan
from pairshift.registry import open_registry
from pairshift.registry.models import (
    Deployment,
    MigrationRow,
    Model,
    Reminder,
)
from pairshift.resolver import InvalidMigration, deployment_policy, plan_migration


@implements(contract.plan_deprecation_scan)
def plan_deprecation_scan(inp: ScanInput) -> ScanPlan:
    """Load deployments, models, sent reminders and relevant migrations; plan; validate each planned start."""
    with open_registry().session() as s:
        migrations = s.exec(
            select(MigrationRow).where(
                or_(MigrationRow.reason == "deprecation", col(MigrationRow.finished_at).is_(None))
            )
        ).all()
        plan = plan_scan(
            inp.today,
            inp.lead_days,
            s.exec(select(Deployment)).all(),
            s.exec(select(Model)).all(),
            s.exec(select(Reminder)).all(),
            migrations,
        )
        _drop_invalid_starts(s, plan)
    return plan


def _drop_invalid_starts(s: Session, plan: ScanPlan) -> None:
    """A start that MigrationWorkflow would refuse (no dataset, ...) becomes a question to a human instead."""
    for start in list(plan.starts):
        try:
            plan_migration(
                s,
                deployment=start.deployment,
                to_model=start.to_model,
                to_prompt=None,
                policy=None,
                today=plan.today,
            )
        except InvalidMigration as exc:
            plan.starts.remove(start)
            plan.blocked[start.deployment] = str(exc)


@implements(contract.record_deprecation_reminders)
def record_deprecation_reminders(inp: RemindersInput) -> list[SentReminder]:
    """Record each due reminder once (Reminder rows) and return the notices of those recorded now.

    The workflow sends them (log, and Slack when the policy names a channel); a reminder recorded by an
    earlier attempt is not returned again, so a retry never repeats a message.
    """
    out = []
    with open_registry().session() as s:
        for r in inp.reminders:
            if not _record_once(s, r.deployment, r.model, r.days_before):
                continue
            for larger in r.also_marks:
                _record_once(s, r.deployment, r.model, larger)
            dep = s.get(Deployment, r.deployment)
            channel = deployment_policy(s, dep).notice.slack_channel if dep else None
            notice = reminder_notice(
                r,
                channel,
                started=inp.started.get(r.deployment),
                live=r.deployment in inp.left_alone,
                blocked=inp.blocked.get(r.deployment),
            )
            out.append(
                SentReminder(
                    deployment=r.deployment,
                    model=r.model,
                    days_before=r.days_before,
                    title=notice.title,
                    notice=notice,
                )
            )
    return out


def _record_once(s: Session, deployment: str, model: str, days_before: int) -> bool:
    exists = s.exec(
        select(Reminder).where(
            Reminder.deployment == deployment, Reminder.model == model, Reminder.days_before == days_before
        )
    ).first()
    if exists is not None:
        return False
    s.add(Reminder(deployment=deployment, model=model, days_before=days_before))
    s.flush()
    return True


def reminder_notice(
    r: PlannedReminder, channel: str | None, *, started: str | None, live: bool, blocked: str | None
) -> Notice:
    """The deprecation reminder a team reads: what retires when, and what pairshift did about it."""
    if r.days_left <= 0:
        title = f"{r.deployment} is still on {r.model}, retired on {r.retires_on}: its calls fail"
    else:
        title = f"{r.model} retires in {r.days_left} days ({r.retires_on}); {r.deployment} is on it"
    if started:
        action = f"pairshift started migration {started} towards {r.replacement} (reason: deprecation)."
    elif live:
        action = "A migration of this deployment is already running; it was left alone."
    elif r.needs_human or blocked:
        action = f"A human has to act: {r.needs_human or blocked}."
    else:
        action = f"A deprecation migration towards {r.replacement} was already started earlier."
    return Notice(
        kind="deprecation_reminder",
        deployment=r.deployment,
        migration=started,
        title=title,
        text=f"{title}.\n{action}",
        channel=channel,
        asks_decision=bool(r.needs_human or blocked),
        facts={
            "model": r.model,
            "retires_on": r.retires_on.isoformat(),
            "days_left": r.days_left,
            "replacement": r.replacement,
            "threshold_days": r.days_before,
        },
    )


ALL = [plan_deprecation_scan, record_deprecation_reminders]
