"""Digests (issue 20 item 2): the migrations one deprecation starts on one day share one channel message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fake_slack import FakeSlack, fake_slack  # noqa: F401  (fixtures)

from pairshift.contracts.notices import Notice
from pairshift.registry.models import MigrationRow, SlackMessage, SlackThread, utcnow
from pairshift.registry.store import Registry
from pairshift.slack import SlackSettings, web_client
from pairshift.slack.block_kit import limit_violations
from pairshift.slack.digest import MAX_NAMED, Digest, digest_message, digest_of
from pairshift.slack.posting import SlackNotifier, SlackRetryable

CHANNEL = "#llm-migrations"
RETIRING = "claude-3-5-sonnet-20240620"
TODAY = datetime(2026, 11, 30, 9, tzinfo=UTC)


def row(
    name: str, *, reason: str = "deprecation", model: str = RETIRING, at: datetime = TODAY, phase="notice"
):
    return MigrationRow(
        run_id=f"run-{name}-{at.isoformat()}",
        workflow_id=f"migration-{name}",
        deployment=name,
        from_pair=f"{name}@1+{model}",
        to_pair=f"{name}@1+claude-sonnet-4-5",
        reason=reason,
        requested_by="pairshift-deprecation-scan" if reason == "deprecation" else "alice",
        phase=phase,
        started_at=at,
    )


def seed(registry: Registry, *rows: MigrationRow) -> None:
    with registry.session() as s:
        for r in rows:
            s.add(r)


def notice(name: str, kind: str = "stage_started", **kw) -> Notice:
    return Notice(
        kind=kind,
        deployment=name,
        migration=f"migration-{name}",
        title=f"{name}: {kind}",
        channel=CHANNEL,
        **kw,
    )


def notifier(fake: FakeSlack, registry: Registry) -> SlackNotifier:
    return SlackNotifier(
        web_client(SlackSettings(bot_token=fake.token, api_url=fake.base_url)),
        registry,
        report_loader=lambda _id: None,
    )


def test_a_deprecations_migrations_post_one_channel_message_and_reply_in_its_thread(
    fake_slack: FakeSlack, sqlite_registry: Registry
) -> None:
    names = ["billing", "search", "support"]
    seed(sqlite_registry, *(row(n) for n in names), row("manual-one", reason="manual"))
    n = notifier(fake_slack, sqlite_registry)
    for name in names:
        n.post(notice(name, "migration_started"))
    n.post(notice("manual-one", "migration_started"))
    asks = [n.post(notice("billing", "approval_requested", asks_decision=True, stage=0))]
    with sqlite_registry.session() as s:  # the workflow records the phase (record_migration_phase)
        s.get(MigrationRow, "run-billing-" + TODAY.isoformat()).phase = "awaiting_approval"
    # search's phase row still says notice: its own notice says what it is now
    asks.append(n.post(notice("search", "approval_requested", asks_decision=True, stage=0)))
    posts = fake_slack.calls_to("chat.postMessage")
    top = [p for p in posts if "thread_ts" not in p]
    assert len(top) == 2, "one digest message and the manual migration's own thread, not one per migration"
    digest = top[0]
    assert "Deprecation of claude-3-5-sonnet-20240620" in digest["text"]
    replies = [p for p in posts if p.get("thread_ts") == asks[0].thread_ts]
    assert len(replies) == 5 and all(p["reply_broadcast"] is False for p in replies)
    assert asks[0].thread_ts == asks[1].thread_ts
    with sqlite_registry.session() as s:  # each member's decision buttons are kept, to be resolved later
        assert s.get(SlackMessage, (asks[1].channel_id, asks[1].ts)).migration == "migration-search"
        assert s.get(SlackThread, ("migration-manual-one", CHANNEL)) is not None
    last = fake_slack.calls_to("chat.update")[-1]
    assert last["ts"] == asks[0].thread_ts
    assert "2 awaiting approval, 1 notice" in last["text"]
    assert "billing" in str(last["blocks"]) and "search" in str(last["blocks"])


def test_another_model_or_another_day_is_another_digest(
    fake_slack: FakeSlack, sqlite_registry: Registry
) -> None:
    seed(
        sqlite_registry,
        row("a"),
        row("b", model="gpt-4o-2024-05-13"),
        row("c", at=TODAY + timedelta(days=1)),
    )
    n = notifier(fake_slack, sqlite_registry)
    threads = {n.post(notice(name, "migration_started")).thread_ts for name in "abc"}
    assert len(threads) == 3


def test_a_digest_being_posted_elsewhere_is_retried_and_a_lost_claim_taken_over(
    fake_slack: FakeSlack, sqlite_registry: Registry
) -> None:
    seed(sqlite_registry, row("a"))
    key = Digest(RETIRING, TODAY.date()).key
    with sqlite_registry.session() as s:
        s.add(SlackThread(migration=key, channel=CHANNEL, channel_id="", ts="pending"))
    n = notifier(fake_slack, sqlite_registry)
    with pytest.raises(SlackRetryable, match="being posted"):
        n.post(notice("a", "migration_started"))
    assert fake_slack.calls_to("chat.postMessage") == []
    with sqlite_registry.session() as s:
        claim = s.get(SlackThread, (key, CHANNEL))
        claim.created_at = utcnow() - timedelta(minutes=5)  # its poster died
        s.add(claim)
    result = n.post(notice("a", "migration_started"))
    assert result.thread_ts != "pending" and len(fake_slack.calls_to("chat.postMessage")) == 2


def test_a_failed_digest_post_releases_its_claim(fake_slack: FakeSlack, sqlite_registry: Registry) -> None:
    seed(sqlite_registry, row("a"))
    fake_slack.fail_next(1, status=503)
    n = notifier(fake_slack, sqlite_registry)
    with pytest.raises(SlackRetryable):
        n.post(notice("a", "migration_started"))
    assert n.post(notice("a", "migration_started")).thread_ts is not None


@pytest.mark.parametrize(
    ("phases", "words"),
    [
        (["notice"], ["1 notice"]),
        (
            ["awaiting_approval", "canary", "promoted", "promoted"],
            ["1 awaiting approval, 1 canary, 2 promoted"],
        ),
        (["rolled_back", "failed_eval"], ["1 rolled back, 1 failed eval"]),
        ([], ["0 migration(s)", "no migration yet"]),
    ],
)
def test_the_digest_says_where_each_stands(phases: list[str], words: list[str]) -> None:
    rows = [row(f"d{i}", phase=p) for i, p in enumerate(phases)]
    message = digest_message(Digest(RETIRING, TODAY.date()), rows)
    text = message.text + str(message.blocks)
    assert all(w in text for w in words), text


def test_two_hundred_waiting_fit_slacks_limits() -> None:
    rows = [row(f"deployment-{i:03d}", phase="awaiting_approval") for i in range(200)]
    message = digest_message(Digest(RETIRING, TODAY.date()), rows)
    assert limit_violations(message) == []
    assert "Waiting for a decision (200)" in str(message.blocks)
    assert f"and {200 - MAX_NAMED} more" in str(message.blocks)


def test_only_deprecations_are_grouped() -> None:
    assert digest_of(row("x", reason="manual")) is None and digest_of(None) is None
    assert digest_of(row("x")) == Digest(RETIRING, TODAY.date())
