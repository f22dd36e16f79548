"""plan_scan, table-driven: reminders (each threshold once, smallest due only), one start per retiring model,
live migrations left alone, a missing replacement asks a human, retired snapshots flagged."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from pairshift.deprecation_plan import REMINDER_DAYS, active_snapshot, alias_targets, by_id, plan_scan
from pairshift.registry.models import Deployment, MigrationRow, Model, Reminder

D0 = date(2026, 3, 1)
RETIRES = D0 + timedelta(days=45)


def models(**over) -> list[Model]:
    old = dict(
        id="old-2024",
        provider="anthropic",
        retires_on=RETIRES,
        replacement="new-2025",
        aliases=["old-latest"],
    )
    old.update(over)
    return [
        Model(**old),
        Model(id="new-2025", provider="anthropic", aliases=["latest"]),
        Model(
            id="gone-2023", provider="anthropic", retires_on=D0 - timedelta(days=3), replacement="new-2025"
        ),
    ]


def dep(name: str = "triage", model: str = "old-2024", migration: str | None = None) -> Deployment:
    return Deployment(name=name, active_prompt="triage@1", active_model=model, migration=migration)


def mig(
    reason: str = "deprecation", from_model: str = "old-2024", live: bool = False, deployment: str = "triage"
) -> MigrationRow:
    return MigrationRow(
        run_id=f"r-{reason}-{from_model}-{live}",
        workflow_id=f"migration-{deployment}",
        deployment=deployment,
        from_pair=f"triage@1+{from_model}",
        to_pair="triage@1+new-2025",
        reason=reason,
        requested_by="x",
        phase="canary" if live else "rejected",
        finished_at=None if live else datetime(2026, 3, 2, tzinfo=UTC),
    )


def sent(*days: int, model: str = "old-2024") -> list[Reminder]:
    return [Reminder(deployment="triage", model=model, days_before=d) for d in days]


@pytest.mark.parametrize(
    ("days_left", "already", "expect_days", "expect_marks"),
    [
        (90, (), None, []),  # outside lead_days: nothing
        (45, (), 60, []),  # first scan 45 days out: the 60-day reminder
        (45, (60,), None, []),  # already sent
        (30, (60,), 30, []),
        (29, (60, 30), None, []),
        (10, (), 14, [30, 60]),  # late first scan: one message, the larger ones marked sent
        (1, (60, 30, 14, 7), 1, [3]),  # a missed scan at 3 days: the 1-day one only
        (1, (60, 30, 14, 7, 3, 1), None, []),
    ],
)
def test_reminder_thresholds(
    days_left: int, already: tuple[int, ...], expect_days: int | None, expect_marks: list[int]
) -> None:
    today = RETIRES - timedelta(days=days_left)
    plan = plan_scan(today, 60, [dep()], models(), sent(*already), [])
    if expect_days is None:
        assert plan.reminders == []
        return
    (r,) = plan.reminders
    assert (r.deployment, r.model, r.days_before, r.also_marks) == (
        "triage",
        "old-2024",
        expect_days,
        expect_marks,
    )
    assert (r.retires_on, r.replacement, r.days_left, r.needs_human) == (RETIRES, "new-2025", days_left, None)


@pytest.mark.parametrize(
    ("migrations", "deployment", "starts", "left_alone"),
    [
        ([], dep(), [("triage", "old-2024", "new-2025")], []),
        ([mig()], dep(), [], []),  # a finished deprecation migration counts
        ([mig(reason="manual")], dep(), [("triage", "old-2024", "new-2025")], []),  # a manual one does not
        ([mig(reason="manual", live=True)], dep(), [], ["triage"]),  # any live migration: left alone
        ([], dep(migration="migration-triage"), [], ["triage"]),  # traffic split owned by a migration
        ([mig(from_model="older-2023")], dep(), [("triage", "old-2024", "new-2025")], []),  # another model's
        ([mig(deployment="other")], dep(), [("triage", "old-2024", "new-2025")], []),
    ],
)
def test_one_start_per_deployment_and_retiring_model(migrations, deployment, starts, left_alone) -> None:
    plan = plan_scan(D0, 60, [deployment], models(), [], migrations)
    assert [(s.deployment, s.from_model, s.to_model) for s in plan.starts] == starts
    assert plan.left_alone == left_alone


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"replacement": None}, "no replacement is known"),
        ({"replacement": "nowhere-9"}, "is not in the registry"),
        ({"replacement": "gone-2023"}, "retired on"),
    ],
)
def test_no_usable_replacement_asks_a_human(over: dict, why: str) -> None:
    plan = plan_scan(D0, 60, [dep()], models(**over), [], [])
    assert plan.starts == []
    (r,) = plan.reminders
    assert r.needs_human is not None and why in r.needs_human


def test_retired_snapshot_is_flagged_every_scan_and_told_once() -> None:
    deployments = [dep("a", "gone-2023"), dep("b", "gone-2023"), dep("c", "new-2025")]
    first = plan_scan(D0, 60, deployments, models(), [], [])
    assert [(f.deployment, f.model) for f in first.flags] == [("a", "gone-2023"), ("b", "gone-2023")]
    assert [(r.deployment, r.days_before) for r in first.reminders] == [("a", 0), ("b", 0)]
    assert (
        first.starts == []
    )  # calls already fail: a human migrates; no automatic eval against a dead baseline
    told = [Reminder(deployment=d, model="gone-2023", days_before=0) for d in ("a", "b")]
    later = plan_scan(D0 + timedelta(days=5), 60, deployments, models(), told, [])
    assert len(later.flags) == 2 and later.reminders == []


def test_alias_deployments_follow_the_snapshot_the_alias_resolves_to() -> None:
    rows = models() + [
        Model(id="latest-alias", provider="anthropic", is_alias=True, resolved_snapshot="old-2024")
    ]
    deployments = [dep("via-listed", "old-latest"), dep("via-row", "latest-alias"), dep("on-new", "latest")]
    plan = plan_scan(D0, 60, deployments, rows, [], [])
    assert sorted(s.deployment for s in plan.starts) == ["via-listed", "via-row"]
    moved = [
        m if m.id != "latest-alias" else Model(**{**m.model_dump(), "resolved_snapshot": "new-2025"})
        for m in rows
    ]
    assert active_snapshot("latest-alias", by_id(moved)).id == "new-2025"
    assert [s.deployment for s in plan_scan(D0, 60, deployments, moved, [], []).starts] == ["via-listed"]
    targets = alias_targets(deployments, rows)
    assert [(t.deployment, t.alias, t.known_snapshot) for t in targets] == [
        ("on-new", "latest", "new-2025"),
        ("via-listed", "old-latest", "old-2024"),
        ("via-row", "latest-alias", "old-2024"),
    ]


def test_a_full_countdown_sends_each_threshold_once() -> None:
    """100 days of plans, feeding back what was recorded: six reminders, one start."""
    recorded: list[Reminder] = []
    messages, starts = [], 0
    migrations: list[MigrationRow] = []
    for day in range(100):
        plan = plan_scan(D0 + timedelta(days=day), 60, [dep()], models(), recorded, migrations)
        starts += len(plan.starts)
        if plan.starts:
            migrations.append(mig())
        for r in plan.reminders:
            messages.append(r.days_before)
            recorded += [
                Reminder(deployment=r.deployment, model=r.model, days_before=d)
                for d in (r.days_before, *r.also_marks)
            ]
    assert sorted(messages, reverse=True) == [*REMINDER_DAYS, 0] and starts == 1
