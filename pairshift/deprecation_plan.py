"""Deprecation planning, pure: which reminders are due, which migrations to start, which deployments broke.

:func:`plan_scan` is what DeprecationScanWorkflow decides each day, as a function of plain registry rows and a
date, so it is tested table-driven and runs the same whether the scan is the schedule's, a person's
(`pairshift deprecations scan --today D`) or a test's. Rules (PRODUCT §8):

- a deployment is affected when its *active snapshot* (its model, or for an alias the snapshot the alias was
  last seen to resolve to) retires within ``lead_days``;
- reminders at 60/30/14/7/3/1 days, each once per (deployment, snapshot): a threshold is due when
  ``days_left <= threshold`` and it was not sent; only the smallest due one is sent and the larger due ones
  are marked sent with it, so a first scan 10 days out sends one message, not four;
- a MigrationWorkflow towards the replacement is started once per (deployment, retiring snapshot): not when a
  deprecation migration from that model exists (finished ones count) nor while any migration is live;
- no replacement, an unknown one or a retired one: the reminder asks a human to choose, nothing starts;
- past its retirement date a snapshot fails every call: each deployment still on it is flagged on every scan
  (and told once); nothing is started automatically, because a migration's baseline arm would fail too.

Alias drift is planned here as well: :func:`alias_targets` lists the deployments configured with an alias and
the snapshot it was last known to resolve to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date

from pairshift.contracts.alias_drift import AliasTarget
from pairshift.contracts.deprecation_scan import PlannedReminder, PlannedStart, RetiredFlag, ScanPlan
from pairshift.contracts.migration import TERMINAL_PHASES
from pairshift.registry.models import Deployment, MigrationRow, Model, Reminder

REMINDER_DAYS: tuple[int, ...] = (60, 30, 14, 7, 3, 1)
RETIRED = 0  # Reminder.days_before of the one notice that a deployment is still on a retired snapshot


# ----------------------------------------------------------------------------------------- resolution


def by_id(models: Iterable[Model]) -> dict[str, Model]:
    """Models keyed by id."""
    return {m.id: m for m in models}


def listing_row(name: str, models: Mapping[str, Model]) -> Model | None:
    """The snapshot row that lists ``name`` among its aliases (``find_model``'s fallback)."""
    return next((m for m in models.values() if not m.is_alias and name in (m.aliases or [])), None)


def active_snapshot(name: str, models: Mapping[str, Model]) -> Model | None:
    """The snapshot a deployment configured with ``name`` is served by, as far as the registry knows."""
    row = models.get(name) or listing_row(name, models)
    if row is not None and row.is_alias:
        # An alias row records where the alias was last seen to point; before any sighting, the config's view.
        seen = models.get(row.resolved_snapshot) if row.resolved_snapshot else None
        return seen or listing_row(name, models)
    return row


def is_alias(name: str, models: Mapping[str, Model]) -> bool:
    """Configured with an alias: an alias row, or a name only known as another row's alias."""
    row = models.get(name)
    return row.is_alias if row is not None else listing_row(name, models) is not None


def pair_model(pair: str) -> str:
    """The model of a pair id ``prompt@version+model`` (prompt names cannot contain ``+``)."""
    return pair.split("+", 1)[1] if "+" in pair else pair


def is_live(m: MigrationRow) -> bool:
    """Whether a migration is still running (not finished, not in a terminal phase)."""
    return m.finished_at is None and m.phase not in TERMINAL_PHASES


# ----------------------------------------------------------------------------------------- the scan


def plan_scan(
    today: date,
    lead_days: int,
    deployments: Sequence[Deployment],
    models: Sequence[Model],
    reminders_sent: Sequence[Reminder],
    migrations: Sequence[MigrationRow],
) -> ScanPlan:
    """What one daily scan does (module docstring); pure: rows and a date in, a plan out."""
    table = by_id(models)
    sent: dict[tuple[str, str], set[int]] = {}
    for r in reminders_sent:
        sent.setdefault((r.deployment, r.model), set()).add(r.days_before)
    plan = ScanPlan(today=today, lead_days=lead_days)
    for dep in sorted(deployments, key=lambda d: d.name):
        snap = active_snapshot(dep.active_model, table)
        if snap is None or snap.retires_on is None:
            continue
        days_left = (snap.retires_on - today).days
        already = sent.get((dep.name, snap.id), set())
        if days_left <= 0:
            _plan_retired(plan, dep, snap, already)
        elif days_left <= lead_days:
            _plan_retiring(plan, dep, snap, days_left, already, table, migrations)
    return plan


def _plan_retired(plan: ScanPlan, dep: Deployment, snap: Model, already: set[int]) -> None:
    assert snap.retires_on is not None
    plan.flags.append(
        RetiredFlag(
            deployment=dep.name, model=snap.id, retired_on=snap.retires_on, replacement=snap.replacement
        )
    )
    if RETIRED not in already:
        plan.reminders.append(
            PlannedReminder(
                deployment=dep.name,
                model=snap.id,
                days_before=RETIRED,
                days_left=(snap.retires_on - plan.today).days,
                retires_on=snap.retires_on,
                replacement=snap.replacement,
                needs_human=f"{snap.id} is retired: calls fail; migrate {dep.name} now",
            )
        )


def _plan_retiring(
    plan: ScanPlan,
    dep: Deployment,
    snap: Model,
    days_left: int,
    already: set[int],
    table: Mapping[str, Model],
    migrations: Sequence[MigrationRow],
) -> None:
    assert snap.retires_on is not None
    needs_human = replacement_problem(snap, table, plan.today)
    ours = [m for m in migrations if m.deployment == dep.name]
    if any(is_live(m) for m in ours) or dep.migration is not None:
        plan.left_alone.append(dep.name)
    elif needs_human is None and not any(
        m.reason == "deprecation" and pair_model(m.from_pair) in {snap.id, dep.active_model} for m in ours
    ):
        assert snap.replacement is not None
        plan.starts.append(PlannedStart(deployment=dep.name, from_model=snap.id, to_model=snap.replacement))
    due = [t for t in REMINDER_DAYS if days_left <= t and t not in already]
    if due:
        plan.reminders.append(
            PlannedReminder(
                deployment=dep.name,
                model=snap.id,
                days_before=min(due),
                days_left=days_left,
                retires_on=snap.retires_on,
                replacement=snap.replacement,
                also_marks=sorted(set(due) - {min(due)}),
                needs_human=needs_human,
            )
        )


def replacement_problem(snap: Model, table: Mapping[str, Model], today: date) -> str | None:
    """Why the snapshot's replacement cannot be migrated to automatically (None = it can)."""
    if not snap.replacement:
        return f"no replacement is known for {snap.id}: choose one and run `pairshift migrate start`"
    target = active_snapshot(snap.replacement, table)
    if target is None:
        return (
            f"replacement {snap.replacement} is not in the registry: add it (config or `pairshift models "
            "sync`) or choose another"
        )
    if target.retires_on is not None and target.retires_on <= today:
        return f"replacement {snap.replacement} retired on {target.retires_on}: choose another"
    return None


# ----------------------------------------------------------------------------------------- alias drift


def alias_targets(
    deployments: Sequence[Deployment], models: Sequence[Model], only: str | None = None
) -> list[AliasTarget]:
    """Deployments on an alias (all, or just ``only``), sorted by name."""
    table = by_id(models)
    out = []
    for dep in sorted(deployments, key=lambda d: d.name):
        if (only is not None and dep.name != only) or not is_alias(dep.active_model, table):
            continue
        row = table.get(dep.active_model) or listing_row(dep.active_model, table)
        assert row is not None  # is_alias found one
        snap = active_snapshot(dep.active_model, table)
        out.append(
            AliasTarget(
                deployment=dep.name,
                prompt=dep.active_prompt,
                alias=dep.active_model,
                known_snapshot=snap.id if snap else None,
                spec_from=row.id,
            )
        )
    return out
