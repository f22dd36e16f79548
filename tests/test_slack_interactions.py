"""`POST /slack/interactions`: only a signed, fresh, first click by an authorized approver decides anything.

The workflow here is a stand-in with MigrationWorkflow's decision surface (``decide`` update + validator built
on ``workflows.migration_rules.refuse_decision``, ``note_refusal``, ``status``), so these tests exercise the
Slack path in isolation; tests/test_slack_migration.py drives the real MigrationWorkflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from fake_slack import FakeSlack, fake_slack  # noqa: F401  (fixture)
from fastapi import FastAPI
from pydantic import BaseModel
from slack_sdk.signature import SignatureVerifier
from temporalio import workflow
from temporalio.worker import Worker

from pairshift.contracts.migration import DecideResult, DecideUpdate, RefusedAttempt
from pairshift.contracts.notices import Notice
from pairshift.migration_records import audit_log
from pairshift.policy import ApprovalPolicy
from pairshift.registry.models import Deployment, MigrationRow, PolicyRow
from pairshift.registry.store import Registry
from pairshift.slack import SlackSettings, web_client
from pairshift.slack import messages as bk
from pairshift.slack.interactions import InteractionService, choose_identity, interactions_router
from workflows.migration_rules import refuse_decision, tally

SECRET = "test-secret"
APPROVERS = ["U_BOB", "carol@example.com", "alice@example.com"]
REQUESTER = "alice@example.com"
USERS = {
    "U_BOB": "bob@example.com",
    "U_CAROL": "carol@example.com",
    "U_ALICE": "alice@example.com",
    "U_EVE": "eve@example.com",
}


class StandInInput(BaseModel):
    approvers: list[str]
    requester: str
    required: int = 1


class StandInStatus(BaseModel):
    waiting: int | None
    votes: dict[int, dict[str, str]]
    refusals: list[RefusedAttempt]


@workflow.defn(name="SlackStandInMigration", sandboxed=False)
class StandInMigration:
    """Waits for decisions on stage 0 then stage 1, with MigrationWorkflow's rules and messages."""

    @workflow.init
    def __init__(self, inp: StandInInput) -> None:
        # The input is held from construction: an update delivered in the workflow's first task is validated
        # before run() starts, and a validator reading state run() sets would fail (AttributeError on None).
        self.inp = inp
        self.waiting: int | None = 0
        self.votes: dict[int, dict[str, str]] = {}
        self.refusals: list[RefusedAttempt] = []

    @workflow.run
    async def run(self, inp: StandInInput) -> str:
        for stage in (0, 1):
            self.waiting = stage
            await workflow.wait_condition(
                lambda stage=stage: tally(self.votes.get(stage, {}), inp.required) is not None
            )
        self.waiting = None
        await workflow.wait_condition(workflow.all_handlers_finished)
        return "done"

    @workflow.update
    def decide(self, d: DecideUpdate) -> DecideResult:
        stage = self.waiting
        self.votes.setdefault(stage, {})[d.by] = d.decision
        approvals = sum(1 for v in self.votes[stage].values() if v == "approve")
        return DecideResult(phase="canary", stage=stage, approvals=approvals, required=self.inp.required)

    @decide.validator
    def _validate(self, d: DecideUpdate) -> None:
        why = refuse_decision(
            by=d.by,
            decision=d.decision,
            stage=d.stage,
            waiting_stage=self.waiting,
            policy=ApprovalPolicy(approvers=self.inp.approvers, required=self.inp.required),
            requester=self.inp.requester,
            voted=set(self.votes.get(self.waiting, {})),
        )
        if why:
            raise ValueError(why)

    @workflow.signal
    def note_refusal(self, attempt: RefusedAttempt) -> None:
        self.refusals.append(attempt)

    @workflow.query
    def status(self) -> StandInStatus:
        return StandInStatus(waiting=self.waiting, votes=self.votes, refusals=self.refusals)


def seed_registry(
    registry: Registry, migration: str, approvers: list[str], requester: str, run_id: str | None = None
) -> None:
    """The rows the handler reads to map a Slack user to an identity: migration, deployment, policy."""
    with registry.session() as s:
        s.merge(
            PolicyRow(
                name="slack-test",
                spec={"name": "slack-test", "approvals": {"approvers": approvers}},
                content_hash="x",
            )
        )
        s.merge(Deployment(name="support-triage", active_prompt="p@1", active_model="m", policy="slack-test"))
        s.add(
            MigrationRow(
                run_id=run_id or uuid.uuid4().hex,
                workflow_id=migration,
                deployment="support-triage",
                from_pair="p@1+m",
                to_pair="p@1+m2",
                reason="manual",
                requested_by=requester,
                phase="awaiting_approval",
            )
        )


def click_payload(
    fake: FakeSlack,
    migration: str,
    user: str,
    action: str = bk.APPROVE_ACTION,
    stage: int = 0,
    key: str | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    message = bk.notice_message(
        Notice(
            kind="approval_requested",
            deployment="support-triage",
            migration=migration,
            title="approve the canary",
            asks_decision=True,
            stage=stage,
            channel="#c",
        )
    )
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "actions": [
            {
                "action_id": action,
                "block_id": bk.DECISION_BLOCK,
                "value": bk.button_value(migration, stage, run),
            }
        ],
        "response_url": fake.response_url(key or user),
        "container": {"channel_id": "C1", "message_ts": "1.1"},
        "message": {"ts": "1.1", "blocks": message.blocks},
    }


def signed(payload: dict[str, Any], *, secret: str = SECRET, age_s: int = 0) -> tuple[bytes, dict[str, str]]:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()) - age_s)
    sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return body, {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


class Rig:
    """The API route, its service, a worker running the stand-in, and one migration waiting on stage 0."""

    def __init__(self, env, fake: FakeSlack, registry: Registry) -> None:
        self.env, self.fake, self.registry = env, fake, registry
        settings = SlackSettings(signing_secret=SECRET, bot_token=fake.token, api_url=fake.base_url)

        async def client():
            return env.client

        self.service = InteractionService(
            registry=registry,
            temporal_client_factory=client,
            web_client_factory=lambda: web_client(settings),
            settings_factory=lambda: settings,
        )
        app = FastAPI()
        app.include_router(interactions_router(self.service))
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        self.migration = f"migration-support-triage-{uuid.uuid4().hex[:6]}"
        self.task_queue = f"slack-{uuid.uuid4().hex[:6]}"
        fake.users.update(USERS)

    async def start(self, approvers: list[str] = APPROVERS, requester: str = REQUESTER, required: int = 1):
        self.handle = await self.env.client.start_workflow(
            StandInMigration.run,
            StandInInput(approvers=approvers, requester=requester, required=required),
            id=self.migration,
            task_queue=self.task_queue,
        )
        self.run_id = self.handle.first_execution_run_id
        seed_registry(self.registry, self.migration, approvers, requester, self.run_id)

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        response = await self.http.post("/slack/interactions", content=body, headers=headers)
        await self.service.drain()
        return response

    async def click(self, user: str, **kw: Any) -> httpx.Response:
        kw.setdefault("run", self.run_id)
        return await self.post(*signed(click_payload(self.fake, self.migration, user, **kw)))

    async def status(self) -> StandInStatus:
        return await self.handle.query(StandInMigration.status)

    def audit(self) -> list[Any]:
        with self.registry.session() as s:
            return audit_log(s, self.migration)

    def responses(self, key: str) -> list[dict[str, Any]]:
        return self.fake.calls_to(f"response_url:{key}")


@pytest.fixture
async def rig(time_skipping_env, fake_slack, sqlite_registry):
    r = Rig(time_skipping_env, fake_slack, sqlite_registry)
    async with Worker(time_skipping_env.client, task_queue=r.task_queue, workflows=[StandInMigration]):
        await r.start()
        yield r
    await r.http.aclose()


async def test_signed_click_by_an_approver_approves_and_replaces_the_buttons(rig: Rig) -> None:
    response = await rig.click("U_BOB")
    assert response.status_code == 200
    st = await rig.status()
    assert st.votes == {0: {"U_BOB": "approve"}} and st.waiting == 1, "stage 0 decided, the workflow moved on"
    [update] = rig.responses("U_BOB")
    assert update["replace_original"] is True and "Approved by <@U_BOB> at " in update["text"]
    assert not any(b.get("block_id") == bk.DECISION_BLOCK for b in update["blocks"])
    assert any(b.get("block_id") == bk.OUTCOME_BLOCK for b in update["blocks"])


async def test_email_approver_is_mapped_through_users_info(rig: Rig) -> None:
    await rig.click("U_CAROL")
    assert (await rig.status()).votes == {0: {"carol@example.com": "approve"}}
    assert rig.fake.calls_to("users.info")[-1]["user"] == "U_CAROL"


async def test_reject_button_rejects(rig: Rig) -> None:
    await rig.click("U_BOB", action=bk.REJECT_ACTION)
    assert (await rig.status()).votes == {0: {"U_BOB": "reject"}}
    assert "Rejected by <@U_BOB>" in rig.responses("U_BOB")[0]["text"]


async def _assert_untouched(rig: Rig) -> None:
    st = await rig.status()
    assert st.votes == {} and st.waiting == 0


@pytest.mark.parametrize("case", ["forged", "stale", "unsigned"])
async def test_forged_stale_or_unsigned_requests_change_nothing_and_are_only_logged(
    rig: Rig, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    payload = click_payload(rig.fake, rig.migration, "U_BOB", run=rig.run_id)
    body, headers = signed(
        payload,
        secret="not-the-secret" if case == "forged" else SECRET,
        age_s=6 * 60 if case == "stale" else 0,
    )
    if case == "unsigned":
        headers.pop("X-Slack-Signature")
    response = await rig.post(body, headers)
    assert response.status_code == 401
    await _assert_untouched(rig)
    assert rig.fake.calls == [], (
        "nothing is sent anywhere for an unverified request (not even its response_url)"
    )
    assert rig.audit() == [], "an unsigned request writes nothing under the migration it names"
    why = {"forged": "bad signature", "stale": "stale request", "unsigned": "missing"}[case]
    assert any("slack request refused" in r.getMessage() and why in r.getMessage() for r in caplog.records)


async def test_a_replayed_request_is_refused_even_after_it_was_accepted(rig: Rig) -> None:
    body, headers = signed(click_payload(rig.fake, rig.migration, "U_BOB", stage=0, run=rig.run_id))
    assert (await rig.post(body, headers)).status_code == 200
    before = await rig.status()
    replay = await rig.post(body, headers)
    assert replay.status_code == 403 and "replayed" in replay.json()["error"]
    assert (await rig.status()) == before
    assert rig.audit() == []


async def test_a_button_of_another_run_is_refused_and_answered_in_slack(rig: Rig) -> None:
    """A leftover button of an earlier migration of the same deployment cannot decide this one."""
    for run, key in (("an-earlier-run", "old"), (None, "no-run")):
        response = await rig.click("U_BOB", run=run, key=key)
        assert response.status_code == 200
        await _assert_untouched(rig)
        [told] = rig.responses(key)
        assert told["response_type"] == "ephemeral" and "not for its live run" in told["text"]
    assert [(e.event, e.accepted) for e in rig.audit()] == [("approve_refused", False)] * 2
    await rig.click("U_BOB")  # the button of this run still works
    assert (await rig.status()).votes == {0: {"U_BOB": "approve"}}


MALFORMED = [
    ("user a string", lambda p: p | {"user": "U_BOB"}),
    ("actions a number", lambda p: p | {"actions": 5}),
    ("action not an object", lambda p: p | {"actions": ["approve"]}),
    ("container a list", lambda p: p | {"container": [1]}),
    ("type missing", lambda p: {k: v for k, v in p.items() if k != "type"}),
]


@pytest.mark.parametrize("name, mutate", MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_a_malformed_signed_payload_answers_400_never_500(rig: Rig, name, mutate) -> None:
    response = await rig.post(
        *signed(mutate(click_payload(rig.fake, rig.migration, "U_BOB", run=rig.run_id)))
    )
    assert response.status_code == 400, response.text
    await _assert_untouched(rig)


DEEP = '{"type": "block_actions", "actions": ' + "[" * 3000 + "]" * 3000 + "}"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"payload=%7B%22a%22", 400),
        (b"payload=" + quote(DEEP).encode(), 400),
        (b"payload=5", 400),
        (b"nothing=here", 400),
        (b"\xff\xfe\x00payload", 401),  # not UTF-8: Slack signs UTF-8 form bodies, so it is not Slack's
    ],
    ids=["truncated JSON", "deep nesting", "a number", "no payload field", "not UTF-8"],
)
async def test_signed_bodies_that_are_not_payloads_answer_4xx(rig: Rig, body: bytes, status: int) -> None:
    ts = str(int(time.time()))
    # Slack's scheme over raw bytes (slack_sdk's generate_signature only takes UTF-8 text)
    sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    response = await rig.post(body, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig})
    assert response.status_code == status, response.text
    await _assert_untouched(rig)


@pytest.mark.parametrize("user,why", [("U_EVE", "not an approver"), ("U_ALICE", "separation of duties")])
async def test_unauthorized_clicks_are_refused_by_the_workflow_and_noted(
    rig: Rig, user: str, why: str
) -> None:
    response = await rig.click(user)
    assert response.status_code == 200  # signed and fresh: Slack is answered, the workflow says no
    await _assert_untouched(rig)
    st = await rig.status()
    [refusal] = st.refusals
    assert (refusal.by, refusal.channel, refusal.stage) == (
        {"U_EVE": "U_EVE", "U_ALICE": REQUESTER}[user],
        "slack",
        0,
    ) and why in refusal.reason
    [ephemeral] = rig.responses(user)
    assert ephemeral["response_type"] == "ephemeral" and ephemeral["replace_original"] is False
    assert why in ephemeral["text"]


async def test_a_click_on_an_already_decided_stage_is_refused(rig: Rig) -> None:
    await rig.click("U_BOB")
    before = await rig.status()
    await rig.click("U_CAROL", stage=0)  # stage 1 waits now
    st = await rig.status()
    assert st.votes == before.votes and st.waiting == 1
    assert "stale decision: stage 0 was decided already" in st.refusals[-1].reason
    assert "not counted" in rig.responses("U_CAROL")[0]["text"]


async def test_two_required_approvals_keep_the_buttons_until_the_second(
    time_skipping_env, fake_slack, sqlite_registry
) -> None:
    r = Rig(time_skipping_env, fake_slack, sqlite_registry)
    async with Worker(time_skipping_env.client, task_queue=r.task_queue, workflows=[StandInMigration]):
        await r.start(required=2)
        await r.click("U_BOB")
        first = r.responses("U_BOB")[0]
        assert "(1 of 2 approvals)" in first["text"]
        assert any(b.get("block_id") == bk.DECISION_BLOCK for b in first["blocks"])
        await r.click("U_CAROL")
        assert (await r.status()).waiting == 1
        assert not any(b.get("block_id") == bk.DECISION_BLOCK for b in r.responses("U_CAROL")[0]["blocks"])
    await r.http.aclose()


async def test_slack_is_answered_before_the_workflow_is(rig: Rig) -> None:
    """The route acknowledges at once; the decision is made in the background (Slack gives up after 3 s)."""
    gate = asyncio.Event()
    original = rig.service._temporal_factory

    async def slow_client():
        await gate.wait()
        return await original()

    rig.service._temporal_factory, rig.service._client = slow_client, None
    body, headers = signed(click_payload(rig.fake, rig.migration, "U_BOB", run=rig.run_id))
    response = await rig.http.post("/slack/interactions", content=body, headers=headers)
    assert response.status_code == 200
    await _assert_untouched(rig)  # answered while the decision is still pending
    gate.set()
    await rig.service.drain()
    assert (await rig.status()).votes == {0: {"U_BOB": "approve"}}


async def test_a_click_on_a_finished_migration_is_audited_in_the_registry(rig: Rig) -> None:
    await rig.click("U_BOB")
    await rig.click("U_CAROL", stage=1)
    assert await rig.handle.result() == "done"
    await rig.click("U_BOB", stage=1, key="late")
    [event] = rig.audit()
    assert (event.event, event.actor, event.accepted) == ("approve_refused", "U_BOB", False)
    assert "not running" in rig.responses("late")[0]["text"]


def test_choose_identity() -> None:
    assert choose_identity("U1", None, ["U1"], "bob") == "U1"
    assert choose_identity("U1", "a@x.io", ["A@x.io"], "bob") == "A@x.io"
    assert choose_identity("U1", "a@x.io", ["U1", "a@x.io"], "a@x.io") == "a@x.io", (
        "the requester stays the requester"
    )
    assert choose_identity("U9", "z@x.io", ["U1"], "bob") == "U9"


async def test_unconfigured_slack_answers_503(sqlite_registry: Registry) -> None:
    service = InteractionService(registry=sqlite_registry, settings_factory=lambda: SlackSettings())
    app = FastAPI()
    app.include_router(interactions_router(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        response = await http.post("/slack/interactions", content=b"payload=%7B%7D")
    assert response.status_code == 503 and "SLACK_SIGNING_SECRET" in response.json()["error"]


async def test_the_route_mounts_in_pairshift_api(rig: Rig) -> None:
    from pairshift.api import create_app

    app = create_app(registry=rig.registry, extra_routers=[interactions_router(rig.service)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        body, headers = signed(click_payload(rig.fake, rig.migration, "U_BOB"), secret="wrong")
        assert (await http.post("/slack/interactions", content=body, headers=headers)).status_code == 401
        body, headers = signed(click_payload(rig.fake, rig.migration, "U_BOB", run=rig.run_id))
        assert (await http.post("/slack/interactions", content=body, headers=headers)).status_code == 200
        await rig.service.drain()
    assert (await rig.status()).votes == {0: {"U_BOB": "approve"}}
    assert "/slack/interactions" in app.openapi()["paths"]
