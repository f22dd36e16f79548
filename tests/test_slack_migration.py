"""Slack with the real MigrationWorkflow (time-skipping server, sim provider): an outage delays notices but
not the migration, the notices arrive afterwards in one thread, and the buttons drive the workflow's
`decide`."""

from __future__ import annotations

import asyncio
import copy

import httpx
import pytest
from fake_slack import FakeSlack, fake_slack, slack_env  # noqa: F401  (fixtures)
from fastapi import FastAPI
from migration_harness import TEST_POLICY, apply_small, migration_worker, start, wait_for, waiting_on
from test_slack_interactions import SECRET, USERS, click_payload, signed

from pairshift.contracts.migration import AbortSignal
from pairshift.migration_records import audit_log
from pairshift.registry import open_registry
from pairshift.registry.models import SlackThread
from pairshift.slack import SlackSettings, web_client
from pairshift.slack import messages as bk
from pairshift.slack.interactions import InteractionService, interactions_router

CHANNEL = "#llm-migrations"
POLICY = copy.deepcopy(TEST_POLICY)
POLICY["approvals"]["approvers"] = ["bob", "carol"]  # bob by his Slack id, carol by her email
POLICY["notice"] = {"slack_channel": CHANNEL}


async def until(pred, what: str, timeout_s: float = 60):
    """Poll ``pred`` (real time: notices arrive on activity retries) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (value := pred()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def posted(fake: FakeSlack) -> list[dict]:
    return fake.calls_to("chat.postMessage")


def with_buttons(fake: FakeSlack) -> list[dict]:
    return [p for p in posted(fake) if any(b.get("block_id") == bk.DECISION_BLOCK for b in p["blocks"])]


@pytest.fixture
def env(pairshift_env, tmp_path, slack_env):
    apply_small(tmp_path, policy=POLICY)
    slack_env.users.update(USERS)
    return slack_env


async def test_outage_delays_notices_not_the_migration_and_buttons_decide(env: FakeSlack, time_skipping_env):
    client = time_skipping_env.client
    settings = SlackSettings(signing_secret=SECRET, bot_token=env.token, api_url=env.base_url)

    async def temporal():
        return client

    service = InteractionService(
        registry=open_registry(),
        temporal_client_factory=temporal,
        web_client_factory=lambda: web_client(settings),
        settings_factory=lambda: settings,
    )
    app = FastAPI()
    app.include_router(interactions_router(service))
    env.fail_next(1, status=503)
    env.rate_limit_next(100_000, retry_after=1)  # Slack is down, then rate limiting, until we say so
    async with (
        migration_worker(client) as tq,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        handle = await start(client, tq, requested_by="carol")
        st = await wait_for(handle, waiting_on(0), timeout_s=120)
        assert st.eval is not None and posted(env) == [], "the migration went on while no notice got through"
        await until(lambda: env.attempts("chat.postMessage") >= 2, "a 503 and then a 429 answered")
        assert posted(env) == []
        env.clear_failures()
        ask = (await until(lambda: with_buttons(env), "the eval summary with buttons"))[0]
        root = posted(env)[0]
        assert "thread_ts" not in root and "started" in root["text"]
        assert "old prompt" in str(ask["blocks"]), "the eval summary carries the 2x2 table"

        actions = next(b for b in ask["blocks"] if b.get("block_id") == bk.DECISION_BLOCK)
        run = bk.parse_button_value(actions["elements"][0]["value"]).run
        assert run == handle.first_execution_run_id, "the posted button names this migration's run"

        async def click(user: str, key: str) -> int:
            body, headers = signed(click_payload(env, handle.id, user, stage=0, key=key, run=run))
            response = await http.post("/slack/interactions", content=body, headers=headers)
            await service.drain()
            return response.status_code

        assert (
            await click("U_CAROL", "carol") == 200
        )  # the requester, found by her email: separation of duties
        assert await click("U_BOB", "bob") == 200
        await wait_for(handle, lambda s: s.phase == "canary")
        assert "Approved by <@U_BOB>" in env.calls_to("response_url:bob")[0]["text"]
        assert "separation of duties" in env.calls_to("response_url:carol")[0]["text"]
        await handle.signal("abort", AbortSignal(by="U_BOB", reason="test over"))
        result = await handle.result()
        assert result.phase == "rolled_back"
        await until(lambda: any(":rewind:" in p["text"] for p in posted(env)), "the rollback notice")
    with open_registry().session() as s:
        events = [(e.event, e.actor, e.channel, e.accepted) for e in audit_log(s, handle.id)]
        thread = s.get(SlackThread, (handle.id, CHANNEL))
    assert ("approve", "bob", "slack", True) in events
    assert ("approve_refused", "carol", "slack", False) in events
    replies = posted(env)[1:]
    assert len(replies) >= 3 and {p["thread_ts"] for p in replies} == {thread.ts}, "one thread per migration"
