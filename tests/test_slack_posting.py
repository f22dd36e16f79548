"""Posting notices: threads per migration, decision messages remembered, and Slack's failures sorted right."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fake_slack import FakeSlack, fake_slack, slack_env  # noqa: F401  (fixtures)
from temporalio.exceptions import ApplicationError

from activities.notices import post_slack_notice
from pairshift.contracts.notices import Notice
from pairshift.registry.models import SlackMessage, SlackThread
from pairshift.registry.store import Registry
from pairshift.slack import SlackSettings, web_client
from pairshift.slack.posting import SlackNotifier, SlackRetryable

MIG = "migration-support-triage"


def notice(kind: str = "stage_started", **kw) -> Notice:
    base = dict(
        kind=kind,
        deployment="support-triage",
        migration=MIG,
        title=f"{kind} title",
        channel="#llm-migrations",
    )
    return Notice(**{**base, **kw})


def make_notifier(fake: FakeSlack, registry: Registry, token: str | None = None) -> SlackNotifier:
    settings = SlackSettings(bot_token=token or fake.token, api_url=fake.base_url)
    return SlackNotifier(web_client(settings), registry, report_loader=lambda _id: None)


def test_first_message_starts_the_thread_and_later_ones_reply(
    fake_slack: FakeSlack, sqlite_registry: Registry
) -> None:
    n = make_notifier(fake_slack, sqlite_registry)
    first = n.post(notice("migration_started"))
    second = n.post(notice("stage_started", stage=1))
    ask = n.post(notice("approval_requested", asks_decision=True, stage=2))
    posts = fake_slack.calls_to("chat.postMessage")
    assert len(posts) == 3
    assert "thread_ts" not in posts[0]
    assert posts[1]["thread_ts"] == posts[2]["thread_ts"] == first.ts
    assert posts[2]["reply_broadcast"] is True and posts[1]["reply_broadcast"] is False
    assert second.thread_ts == first.ts and ask.ts not in (first.ts, second.ts)
    with sqlite_registry.session() as s:
        assert s.get(SlackThread, (MIG, "#llm-migrations")).ts == first.ts
        stored = s.get(SlackMessage, (ask.channel_id, ask.ts))
        assert stored.stage == 2 and any(b.get("block_id") == "pairshift_decision" for b in stored.blocks)
    # a new run of the same deployment's migration starts a new thread
    again = n.post(notice("migration_started"))
    assert again.ts != first.ts and n.post(notice("info")).thread_ts == again.ts


def test_stage_start_and_the_end_replace_stale_buttons(
    fake_slack: FakeSlack, sqlite_registry: Registry
) -> None:
    n = make_notifier(fake_slack, sqlite_registry)
    n.post(notice("migration_started"))
    ask = n.post(notice("approval_requested", asks_decision=True, stage=2))
    n.post(notice("approval_reminder", asks_decision=True, stage=2))
    result = n.post(notice("stage_started", stage=2, title="stage 2 started, 20%"))
    assert result.buttons_resolved == 2
    updates = fake_slack.calls_to("chat.update")
    assert {u["ts"] for u in updates} >= {ask.ts}
    assert all(not any(b.get("block_id") == "pairshift_decision" for b in u["blocks"]) for u in updates)
    assert n.post(notice("promoted")).buttons_resolved == 0  # nothing left to resolve


def test_rate_limit_raises_with_slacks_retry_after_and_no_sdk_retry(
    slack_env: FakeSlack, use_registry: str
) -> None:
    slack_env.rate_limit_next(1, retry_after=7)
    with pytest.raises(ApplicationError) as info:
        post_slack_notice(notice())
    assert info.value.next_retry_delay == timedelta(seconds=7) and not info.value.non_retryable
    assert slack_env.attempts("chat.postMessage") == 1  # the WebClient did not retry on its own


def test_server_errors_are_retryable(slack_env: FakeSlack, use_registry: str) -> None:
    slack_env.fail_next(1, status=503)
    with pytest.raises(ApplicationError) as info:
        post_slack_notice(notice())
    assert info.value.type == "SlackUnavailable" and not info.value.non_retryable
    assert post_slack_notice(notice())["ts"]  # the retry goes through


def test_unreachable_slack_is_retryable(sqlite_registry: Registry) -> None:
    settings = SlackSettings(bot_token="xoxb-x", api_url="http://127.0.0.1:9/api/")  # discard port: refused
    n = SlackNotifier(web_client(settings), sqlite_registry)
    with pytest.raises(SlackRetryable, match="unreachable"):
        n.post(notice())


@pytest.mark.parametrize(
    "channel,token,error",
    [("#nowhere", None, "channel_not_found"), ("#llm-migrations", "xoxb-wrong", "invalid_auth")],
)
def test_refusals_for_good_are_logged_and_skipped(
    slack_env: FakeSlack, use_registry: str, monkeypatch, channel, token, error
) -> None:
    if token:
        monkeypatch.setenv("SLACK_BOT_TOKEN", token)
    assert post_slack_notice(notice(channel=channel)) == {"skipped": error}


def test_without_a_token_nothing_is_posted(fake_slack: FakeSlack, monkeypatch, use_registry: str) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("PAIRSHIFT_SLACK_API_URL", fake_slack.base_url)
    assert post_slack_notice(notice()) == {"skipped": "slack not configured"}
    assert fake_slack.calls == []


def test_tokens_never_appear_in_settings_output(monkeypatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-123")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "sign-secret-456")
    from pairshift.slack import slack_settings

    s = slack_settings()
    assert s.bot_token.get_secret_value() == "xoxb-secret-123"
    dumped = repr(s) + str(s.model_dump()) + s.model_dump_json()
    assert "xoxb-secret-123" not in dumped and "sign-secret-456" not in dumped


def test_only_slacks_own_variable_names_are_read(monkeypatch) -> None:
    from pairshift.slack import slack_settings

    monkeypatch.setenv("API_URL", "http://evil.example")
    monkeypatch.setenv("BOT_TOKEN", "xoxb-other")
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("PAIRSHIFT_SLACK_API_URL", raising=False)
    s = slack_settings()
    assert s.bot_token is None and s.api_url is None and s.base_url == "https://slack.com/api/"


def test_response_urls_are_limited_to_slack_hooks_or_the_configured_fake() -> None:
    real = SlackSettings()
    assert real.response_url_allowed("https://hooks.slack.com/actions/T1/1/abc")
    assert not real.response_url_allowed("http://hooks.slack.com/actions/T1/1/abc")
    assert not real.response_url_allowed("https://169.254.169.254/latest/meta-data")
    fake = SlackSettings(api_url="http://127.0.0.1:5555/api/")
    assert fake.response_url_allowed("http://127.0.0.1:5555/response/x")
    assert not fake.response_url_allowed("http://127.0.0.1:6666/response/x")
