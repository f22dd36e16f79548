"""Activities of DeprecationScanWorkflow and AliasDriftWorkflow: registry reads and writes, probes, notices.

Thin and idempotent: the decisions are :mod:`pairshift.deprecation`'s (pure). A retried activity never records
a reminder or a ledger row twice. Notices are returned to the workflow, which sends them through the same
activities as MigrationWorkflow (``send_notice``, then ``post_slack_notice`` when the policy names a channel).
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field
from sqlmodel import Session, col, or_, select
from temporalio import activity

from pairshift import ledger, notifier
from pairshift.deprecation import AliasTarget, PlannedReminder, ScanPlan, alias_targets, plan_scan
from pairshift.migration import InvalidMigration, deployment_policy, plan_migration
from pairshift.providers import CallParams, Message, ModelSpec, ProviderError, RetryPolicy, complete
from pairshift.registry import open_registry
from pairshift.registry.models import (
    Deployment,
    LedgerEntry,
    MigrationRow,
    Model,
    Observation,
    Reminder,
    utcnow,
)

PROBE_RETRY = RetryPolicy(max_attempts=3, max_retry_after_s=30.0)


# ----------------------------------------------------------------------------------------- the scan


class ScanInput(BaseModel):
    today: date
    lead_days: int


@activity.defn
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


class RemindersInput(BaseModel):
    reminders: list[PlannedReminder]
    started: dict[str, str] = Field(default_factory=dict, description="deployment -> migration workflow id")
    left_alone: list[str] = Field(default_factory=list)
    blocked: dict[str, str] = Field(default_factory=dict)


class SentReminder(BaseModel):
    deployment: str
    model: str
    days_before: int
    title: str
    notice: notifier.Notice


@activity.defn
def record_deprecation_reminders(inp: RemindersInput) -> list[SentReminder]:
    """Record each due reminder once (Reminder rows) and return the notices of those recorded now.

    The workflow sends them (log, and Slack when the policy names a channel); a reminder recorded by an earlier
    attempt is not returned again, so a retry never repeats a message.
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
) -> notifier.Notice:
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
    return notifier.Notice(
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


# ----------------------------------------------------------------------------------------- alias drift


class AliasQuery(BaseModel):
    deployment: str | None = None


@activity.defn
def find_alias_targets(q: AliasQuery) -> list[AliasTarget]:
    """The deployments configured with an alias and the snapshot each was last known to resolve to."""
    with open_registry().session() as s:
        targets = alias_targets(
            s.exec(select(Deployment)).all(), s.exec(select(Model)).all(), only=q.deployment
        )
        for t in targets:
            dep = s.get(Deployment, t.deployment)
            t.channel = deployment_policy(s, dep).notice.slack_channel if dep else None
            t.observed_snapshot = s.exec(
                select(Observation.resolved_model)
                .where(
                    Observation.deployment == t.deployment,
                    Observation.resolved_model.is_not(None),
                    Observation.pair.endswith(f"+{t.alias}"),
                )
                .order_by(Observation.at.desc())
                .limit(1)
            ).first()
        return targets


class ProbeResult(BaseModel):
    deployment: str
    alias: str
    resolved: str | None = None
    error: str | None = None


@activity.defn
async def probe_alias(t: AliasTarget) -> ProbeResult:
    """One cheap call (max_tokens=1) to the alias: the response's ``model`` is the snapshot it resolves to now."""
    with open_registry().session() as s:
        row = s.get(Model, t.spec_from)
        if row is None:
            return ProbeResult(
                deployment=t.deployment, alias=t.alias, error=f"model {t.spec_from} left the registry"
            )
        spec = ModelSpec.from_model(row, id=t.alias, timeout_s=30.0)
    try:
        done = await complete(
            spec, None, [Message(role="user", content="ping")], CallParams(max_tokens=1), retry=PROBE_RETRY
        )
    except ProviderError as exc:  # a failed probe is reported, not retried by Temporal on top of complete()
        return ProbeResult(
            deployment=t.deployment, alias=t.alias, error=f"probe of {t.alias} failed: {exc.message}"
        )
    return ProbeResult(deployment=t.deployment, alias=t.alias, resolved=done.resolved_model)


class Drift(BaseModel):
    deployment: str
    prompt: str
    alias: str
    from_snapshot: str | None
    to_snapshot: str
    spec_from: str
    channel: str | None = None
    seen_via: str = "probe"
    detected_at: datetime

    @property
    def note(self) -> str:
        return (
            f"alias {self.alias} moved from {self.from_snapshot or 'an unrecorded snapshot'} to "
            f"{self.to_snapshot} on {self.detected_at.date().isoformat()}"
        )

    @property
    def key(self) -> str:
        return f"{self.alias}:{self.from_snapshot}->{self.to_snapshot}"


@activity.defn
def ensure_snapshot_row(d: Drift) -> bool:
    """The new snapshot as a model row (provider settings of the alias's row) so it can be evaluated."""
    with open_registry().session() as s:
        if s.get(Model, d.to_snapshot) is not None:
            return False
        base = s.get(Model, d.spec_from)
        assert base is not None
        s.add(
            Model(
                id=d.to_snapshot,
                provider=base.provider,
                base_url=base.base_url,
                api_key_env=base.api_key_env,
                input_per_mtok=base.input_per_mtok,
                output_per_mtok=base.output_per_mtok,
                limits=dict(base.limits or {}),
                source="observed",
            )
        )
        return True


class DriftRecord(BaseModel):
    drift: Drift
    report_id: str | None = None
    gate: str | None = None
    eval_error: str | None = None


@activity.defn
def record_alias_drift(rec: DriftRecord) -> bool:
    """In one transaction: the alias row's resolved snapshot, and the ledger row with the eval's evidence."""
    d = rec.drift
    with open_registry().session() as s:
        _point_alias(s, d)
        dup = s.exec(
            select(LedgerEntry).where(
                LedgerEntry.deployment == d.deployment, LedgerEntry.reason == "alias-drift"
            )
        ).all()
        if any(e.evidence.get("_key") == d.key for e in dup):
            return False
        dep = s.get(Deployment, d.deployment)
        ledger.append(
            s,
            deployment=d.deployment,
            prompt=dep.active_prompt if dep else d.prompt,
            model=d.alias,
            by="pairshift-alias-drift",
            reason="alias-drift",
            migration=None,
            at=d.detected_at,
            evidence={
                "note": d.note,
                "alias": d.alias,
                "from": d.from_snapshot,
                "to": d.to_snapshot,
                "seen_via": d.seen_via,
                "eval_report": rec.report_id,
                "eval_gate": rec.gate,
                "eval_error": rec.eval_error,
                "_key": d.key,
            },
        )
        return True


def _point_alias(s: Session, d: Drift) -> None:
    row = s.get(Model, d.alias)
    if row is None:  # the alias was only known from a snapshot's aliases list: it gets its own row now
        base = s.get(Model, d.spec_from)
        assert base is not None
        row = Model(
            id=d.alias,
            provider=base.provider,
            base_url=base.base_url,
            api_key_env=base.api_key_env,
            input_per_mtok=base.input_per_mtok,
            output_per_mtok=base.output_per_mtok,
            limits=dict(base.limits or {}),
            is_alias=True,
            source="observed",
        )
    row.resolved_snapshot, row.updated_at = d.to_snapshot, utcnow()
    s.add(row)


ALL = [
    plan_deprecation_scan,
    record_deprecation_reminders,
    find_alias_targets,
    probe_alias,
    ensure_snapshot_row,
    record_alias_drift,
]
