"""The split state the router reads: set, restore, promote — idempotent, owned by one migration (SQLite +
PostgreSQL)."""

import pytest
from conftest import EXAMPLES

from pairshift import ledger, split
from pairshift.apply import apply_path
from pairshift.registry.models import Deployment, Model
from pairshift.resolver import InvalidMigration, plan_migration


@pytest.fixture
def applied(registry):
    apply_path(registry, EXAMPLES, by="test")
    return registry


def test_set_restore_promote(applied):
    with applied.session() as s:
        split.set_split(
            s,
            deployment="support-triage",
            migration="m1",
            prompt="support-triage@2",
            model="sim-fresh-2025-09",
            percent=5,
        )
    with applied.session() as s:
        dep = s.get(Deployment, "support-triage")
        assert (dep.candidate_pair, dep.canary_percent, dep.migration) == (
            "support-triage@2+sim-fresh-2025-09",
            5,
            "m1",
        )
        with pytest.raises(split.SplitConflict, match="being migrated by m1"):
            split.set_split(
                s,
                deployment="support-triage",
                migration="m2",
                prompt="support-triage@2",
                model="sim-fresh-2025-09",
                percent=5,
            )
    with applied.session() as s:
        assert split.restore_baseline(s, deployment="support-triage", migration="m1", reason="gate breach")
        assert not split.restore_baseline(s, deployment="support-triage", migration="m1")  # idempotent
    with applied.session() as s:
        dep = s.get(Deployment, "support-triage")
        assert (dep.candidate_pair, dep.canary_percent, dep.migration) == (None, 0, None)
        rows = ledger.history(s, "support-triage")
        assert rows[-1].reason.startswith("rolled back from support-triage@2+sim-fresh-2025-09: gate breach")
        assert rows[-1].pair == "support-triage@1+sim-classic-2024-06"
    with applied.session() as s:
        assert split.promote(
            s,
            deployment="support-triage",
            migration="m3",
            prompt="support-triage@2",
            model="sim-fresh-2025-09",
            by="alice",
            reason="manual",
            evidence={"runs": ["r1"]},
        )
        assert not split.promote(
            s,
            deployment="support-triage",
            migration="m3",
            prompt="support-triage@2",
            model="sim-fresh-2025-09",
            by="alice",
            reason="manual",
            evidence={},
        )
    with applied.session() as s:
        rows = ledger.history(s, "support-triage")
        assert rows[-1].pair == "support-triage@2+sim-fresh-2025-09" and rows[-1].evidence == {"runs": ["r1"]}
        assert rows[-2].replaced_at == rows[-1].shipped_at
        assert ledger.serving_at(s, "support-triage", rows[-1].shipped_at).pair == rows[-1].pair


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(deployment="nope", to_model="sim-fresh-2025-09", to_prompt=None), "unknown deployment 'nope'"),
        (dict(deployment="support-triage", to_model="gpt-9", to_prompt=None), "unknown model 'gpt-9'"),
        (
            dict(deployment="support-triage", to_model="sim-fresh-2025-09", to_prompt="support-triage@7"),
            "unknown prompt version 'support-triage@7'",
        ),
        (
            dict(deployment="support-triage", to_model="sim-classic-2024-06", to_prompt="support-triage@1"),
            "already the baseline pair",
        ),
    ],
)
def test_invalid_requests_are_refused(applied, kwargs, words):
    with applied.session() as s, pytest.raises(InvalidMigration, match=words):
        plan_migration(s, policy=None, **kwargs)


def test_retired_target_is_refused(applied):
    import datetime as dt

    with applied.session() as s:
        s.get(Model, "sim-literal-2025-11").retires_on = dt.date(2026, 1, 1)
    with applied.session() as s, pytest.raises(InvalidMigration, match="retired on 2026-01-01"):
        plan_migration(
            s, deployment="support-triage", to_model="sim-literal-2025-11", to_prompt=None, policy=None
        )


def test_alias_target_resolves_and_plan_carries_the_policy(applied):
    with applied.session() as s:
        plan = plan_migration(
            s, deployment="support-triage", to_model="sim-latest", to_prompt="support-triage@2", policy=None
        )
    assert plan.to_pair == "support-triage@2+sim-latest" and plan.policy.name == "demo"
    assert plan.from_pair == "support-triage@1+sim-classic-2024-06"
