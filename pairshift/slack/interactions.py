"""Approval buttons that are safe to click: ``POST /slack/interactions`` and the handler Socket Mode shares.

A click moves production traffic, so it gets the CLI's guarantees and more:

1. the request is verified with slack_sdk's ``SignatureVerifier`` (signing secret, 5-minute window) on the
   raw body (at most 64 KB), before anything of it is parsed, and a signature seen before is refused as a
   replay (kept in the registry, so every API replica knows it); forged, stale and replayed requests answer
   401/403, reach no workflow and are logged, never written to a migration's audit log (an unsigned request
   could otherwise write rows under any migration it names); a signed payload of the wrong shape answers 400;
2. the button names the migration *run* it was posted for: a click on a leftover button of an earlier run
   is refused and the clicker told so (the update also carries the run as Temporal's first execution run id);
3. the Slack user becomes a person (``people:``): the one whose ``slack`` id it is, or whose email
   ``users.info`` gives; the decision is sent as that person's name (as the requester's identity when it is
   the requester, so separation of duties holds whichever identity either used);
4. the decision goes through the workflow's ``decide`` update, whose validator is the one authority (unknown
   approver, requester, stage not waiting, second vote); a refusal is reported back with ``note_refusal``
   like the CLI does, so the workflow's audit log records the attempt;
5. Slack gets its 200 at once (it gives up after 3 s); the update and the message change run afterwards:
   the buttons are replaced by the outcome, or the refusal is shown to the clicker only (ephemeral).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier
from sqlalchemy.exc import IntegrityError
from sqlmodel import delete, select
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from pairshift.contracts.migration import AuditIn, DecideResult, DecideUpdate, RefusedAttempt
from pairshift.migration_records import record_audit
from pairshift.people import People, load_people
from pairshift.registry.models import Deployment, MigrationRow, SlackSeenRequest, utcnow
from pairshift.registry.store import Registry, open_registry
from pairshift.resolver import deployment_policy
from pairshift.slack import SlackSettings, slack_settings, web_client
from pairshift.slack import messages as bk
from pairshift.slack.posting import SlackNotifier, SlackRejected, SlackRetryable, call_slack

log = logging.getLogger("pairshift.slack")

WINDOW_S = 5 * 60  # Slack's documented replay window, the verifier's too
SEEN_TTL = timedelta(minutes=10)  # past the window a replay is refused as stale; older rows can go
AUDIT_FALLBACK = "slack"  # the audit "migration" of a refused request that names none we can parse


class Click(BaseModel):
    """A verified click on one of our decision buttons."""

    user_id: str
    action: Literal["approve", "reject"]
    migration: str
    run_id: str | None = None
    stage: int | None
    response_url: str | None = None
    channel_id: str | None = None
    message_ts: str | None = None
    message_blocks: list[dict[str, Any]] = []


class ClickOutcome(BaseModel):
    """What a click led to: whether the workflow took the decision, whose it was, and the text shown."""

    accepted: bool
    by: str
    text: str


class _Id(BaseModel):
    id: str = Field(..., max_length=200)


class _Container(BaseModel):
    channel_id: str | None = Field(None, max_length=200)
    message_ts: str | None = Field(None, max_length=200)


class _Message(BaseModel):
    ts: str | None = Field(None, max_length=200)
    blocks: list[dict[str, Any]] = Field(default_factory=list, max_length=100)


class _Action(BaseModel):
    action_id: str | None = Field(None, max_length=255)
    value: str | None = Field(None, max_length=2_000)


class Interaction(BaseModel):
    """The parts of a Slack interaction payload pairshift reads, typed: any other shape is a 400."""

    type: str = Field(..., max_length=100)
    user: _Id | None = None
    actions: list[_Action] = Field(default_factory=list, max_length=25)
    container: _Container | None = None
    channel: _Id | None = None
    message: _Message | None = None
    response_url: str | None = Field(None, max_length=2_000)


def parse_form(body: bytes) -> dict[str, Any] | None:
    """Slack posts ``payload=<json>`` form-encoded; None when the body is not that."""
    try:
        raw = parse_qs(body.decode("utf-8"), max_num_fields=20).get("payload", [None])[0]
        payload = json.loads(raw) if raw else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def parse_interaction(payload: dict[str, Any]) -> Interaction | None:
    """The payload typed, or None when its shape is not Slack's (``user`` a string, ``actions: 5``...)."""
    try:
        return Interaction.model_validate(payload)
    except (ValidationError, RecursionError):
        return None


def _decision_action(payload: Interaction) -> _Action | None:
    if payload.type != "block_actions":
        return None
    return next((a for a in payload.actions if a.action_id in bk.DECISION_ACTIONS), None)


def parse_click(payload: dict[str, Any] | Interaction) -> Click | None:
    """The click, or None when the payload is not one of our decision buttons (then it is ignored)."""
    typed = payload if isinstance(payload, Interaction) else parse_interaction(payload)
    action = _decision_action(typed) if typed else None
    value = bk.parse_button_value(action.value or "") if action else None
    if typed is None or action is None or value is None or typed.user is None:
        return None
    container, message = typed.container or _Container(), typed.message or _Message()
    return Click(
        user_id=typed.user.id,
        action="approve" if action.action_id == bk.APPROVE_ACTION else "reject",
        migration=value.migration,
        run_id=value.run,
        stage=value.stage,
        response_url=typed.response_url,
        channel_id=container.channel_id or (typed.channel.id if typed.channel else None),
        message_ts=container.message_ts or message.ts,
        message_blocks=message.blocks,
    )


def choose_identity(user_id: str, email: str | None, approvers: list[str], requester: str) -> str:
    """The identity a click decides as: the one the policy knows, and the requester's when it is theirs."""
    if email and requester and email.lower() == requester.lower():
        return requester  # so the workflow's separation-of-duties rule sees who it is
    if user_id in approvers:
        return user_id
    if email:
        listed = next((a for a in approvers if a.lower() == email.lower()), None)
        if listed:
            return listed
    return user_id


def stale_or_forged(
    verifier: SignatureVerifier,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: float | None = None,
) -> str | None:
    """Why the request must be refused, or None when Slack signed it within the window."""
    if not timestamp or not signature:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    try:
        age = (now if now is not None else time.time()) - int(timestamp)
    except ValueError:
        return "malformed X-Slack-Request-Timestamp"
    if abs(age) > WINDOW_S:
        return f"stale request: timestamp {int(age)} s away from now (window {WINDOW_S} s)"
    try:
        valid = verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
    except UnicodeDecodeError:  # Slack signs UTF-8 form bodies; slack_sdk decodes before hashing
        return "body is not UTF-8"
    if not valid:
        return "bad signature"
    return None


class InteractionService:
    """Everything a click needs; the HTTP route and Socket Mode both call :meth:`dispatch`."""

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        temporal_client_factory: Callable[[], Awaitable[Client]] | None = None,
        web_client_factory: Callable[[], WebClient] | None = None,
        settings_factory: Callable[[], SlackSettings] = slack_settings,
    ) -> None:
        self._registry = registry
        self._temporal_factory = temporal_client_factory
        self._web_client_factory = web_client_factory
        self.settings_factory = settings_factory
        self._client: Client | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = open_registry()
        return self._registry

    # ------------------------------------------------------------ replay and refusal bookkeeping

    def seen_before(self, key: str) -> bool:
        """Record ``key``; True when it was recorded before (a replay). Atomic across replicas."""
        try:
            with self.registry.session() as s:
                s.exec(delete(SlackSeenRequest).where(SlackSeenRequest.seen_at < utcnow() - SEEN_TTL))
                s.add(SlackSeenRequest(key=key))
            return False
        except IntegrityError:
            return True

    def audit(
        self,
        migration: str | None,
        event: str,
        reason: str,
        *,
        actor: str | None = None,
        stage: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """An audit event written straight to the registry (for attempts the workflow never sees)."""
        migration = migration or AUDIT_FALLBACK
        with self.registry.session() as s:
            run = s.exec(
                select(MigrationRow.run_id)
                .where(MigrationRow.workflow_id == migration)
                .order_by(MigrationRow.started_at.desc())
            ).first()
            record_audit(
                s,
                workflow_id=migration,
                run_id=run or AUDIT_FALLBACK,
                events=[
                    AuditIn(
                        key=f"slack-{uuid.uuid4().hex}",
                        event=event,
                        at=utcnow(),
                        actor=actor,
                        channel="slack",
                        stage=stage,
                        accepted=False,
                        detail={"detail": reason, **(detail or {})},
                    )
                ],
            )

    def refuse_request(self, reason: str, *, size: int, client: str | None) -> None:
        """Log a request refused before it reached a workflow (forged, stale, replayed).

        Nothing of it is parsed and nothing is written: an unsigned request must not be able to put rows in
        any migration's audit log.
        """
        log.warning("slack request refused (%s): %d bytes from %s", reason, size, client or "?")

    # ------------------------------------------------------------ background work

    def dispatch(self, payload: dict[str, Any], *, channel: str = "slack") -> bool:
        """Start handling a verified payload in the background; False when it is not a decision click."""
        click = parse_click(payload)
        if click is None:
            return False
        task = asyncio.get_running_loop().create_task(self._safe_handle(click, channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Wait for the clicks being handled (tests, and a graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _safe_handle(self, click: Click, channel: str) -> ClickOutcome | None:
        try:
            return await self.handle_click(click, channel)
        except Exception as exc:  # noqa: BLE001 - Slack has had its 200; tell the clicker rather than vanish
            log.exception("slack click on %s failed", click.migration)
            await self._tell_clicker(
                click,
                f"pairshift could not process your click ({type(exc).__name__}); "
                "nothing was decided, please try again",
            )
            return None

    async def handle_click(self, click: Click, channel: str = "slack") -> ClickOutcome:
        """Send the decision to the workflow; show the outcome (to all) or the refusal (to the clicker)."""
        by = await self._identity(click)
        live_run = await run_in_threadpool(self._live_run, click.migration)
        if click.run_id is None or click.run_id != live_run:
            reason = (
                f"this button was posted for run {click.run_id or '(unknown)'} of {click.migration}, "
                f"not for its live run {live_run or '(none)'}"
            )
            await run_in_threadpool(
                self.audit, click.migration, f"{click.action}_refused", reason, actor=by, stage=click.stage
            )
            return await self._refused(click, by, reason)
        handle = (await self._temporal()).get_workflow_handle(
            click.migration, first_execution_run_id=click.run_id
        )
        try:
            result: DecideResult = await handle.execute_update(
                "decide",
                DecideUpdate(by=by, decision=click.action, stage=click.stage, channel=channel),
                result_type=DecideResult,
            )
        except WorkflowUpdateFailedError as exc:
            reason = str(exc.cause or exc)
            await handle.signal(
                "note_refusal",
                RefusedAttempt(
                    by=by, decision=click.action, reason=reason, channel=channel, stage=click.stage
                ),
            )
            return await self._refused(click, by, reason)
        except RPCError as exc:  # no such workflow, or it already finished: nobody else will audit this
            reason = f"migration {click.migration} is not running ({exc.message})"
            await run_in_threadpool(
                self.audit, click.migration, f"{click.action}_refused", reason, actor=by, stage=click.stage
            )
            return await self._refused(click, by, reason)
        decided = click.action == "reject" or result.approvals >= result.required
        at = datetime.now(UTC).strftime("%H:%M UTC")
        verb = "Approved" if click.action == "approve" else "Rejected"
        text = f"{verb} by <@{click.user_id}> at {at}" + (
            "" if decided else f" ({result.approvals} of {result.required} approvals)"
        )
        await self._show_outcome(click, text, decided=decided, stage=result.stage)
        return ClickOutcome(accepted=True, by=by, text=text)

    async def _refused(self, click: Click, by: str, reason: str) -> ClickOutcome:
        text = f"Your {click.action} was not counted: {reason}"
        await self._tell_clicker(click, text)
        return ClickOutcome(accepted=False, by=by, text=text)

    # ------------------------------------------------------------ collaborators

    async def _temporal(self) -> Client:
        if self._client is None:
            if self._temporal_factory is None:
                from pairshift.temporal_client import connect

                self._temporal_factory = connect
            self._client = await self._temporal_factory()
        return self._client

    def _notifier(self) -> SlackNotifier | None:
        settings = self.settings_factory()
        if self._web_client_factory is None and settings.bot_token is None:
            return None  # no bot token: response_url still works, chat.update / users.info do not
        client = self._web_client_factory() if self._web_client_factory else web_client(settings)
        return SlackNotifier(client, self.registry)

    def _live_run(self, migration: str) -> str | None:
        """The run id the registry records for the migration's latest run (its first execution's)."""
        with self.registry.session() as s:
            return s.exec(
                select(MigrationRow.run_id)
                .where(MigrationRow.workflow_id == migration)
                .order_by(MigrationRow.started_at.desc())
            ).first()

    def _people(self, migration: str) -> tuple[list[str], str, People]:
        """The approvers of the migration's policy, its requester, and the registry's people."""
        with self.registry.session() as s:
            people = load_people(s)
            row = s.exec(
                select(MigrationRow)
                .where(MigrationRow.workflow_id == migration)
                .order_by(MigrationRow.started_at.desc())
            ).first()
            dep = s.get(Deployment, row.deployment) if row else None
            if row is None or dep is None:
                return [], "", people
            return deployment_policy(s, dep).approvals.named, row.requested_by, people

    async def _identity(self, click: Click) -> str:
        approvers, requester, people = await run_in_threadpool(self._people, click.migration)
        person = next((p for p in people.people if p.slack == click.user_id), None)
        email = None
        if person is None and (
            any(p.email for p in people.people) or any("@" in a for a in approvers) or "@" in requester
        ):
            notifier = self._notifier()
            email = await run_in_threadpool(notifier.user_email, click.user_id) if notifier else None
            person = next((p for p in people.people if email and p.email == email.lower()), None)
        if person is not None:
            return requester if requester and people.same(person.name, requester) else person.name
        return choose_identity(click.user_id, email, approvers, requester)

    async def _respond(self, click: Click, body: dict[str, Any]) -> bool:
        """POST to the click's response_url (Slack's hooks only); False when there is none we may use."""
        url = click.response_url
        if not url or not self.settings_factory().response_url_allowed(url):
            return False
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                resp = await http.post(url, json=body)
            return resp.status_code < 400
        except httpx.HTTPError as exc:
            log.warning("response_url failed for %s: %s", click.migration, exc)
            return False

    async def _tell_clicker(self, click: Click, text: str) -> None:
        if await self._respond(
            click, {"response_type": "ephemeral", "replace_original": False, "text": text}
        ):
            return
        notifier = self._notifier()
        if notifier and click.channel_id:
            try:
                await run_in_threadpool(
                    call_slack,
                    notifier.client.chat_postEphemeral,
                    channel=click.channel_id,
                    user=click.user_id,
                    text=text,
                )
            except (SlackRetryable, SlackRejected) as exc:
                log.warning("could not tell %s why their click was refused: %s", click.user_id, exc)

    async def _show_outcome(self, click: Click, text: str, *, decided: bool, stage: int | None) -> None:
        blocks = bk.resolved(click.message_blocks, text, keep_buttons=not decided)
        shown = await self._respond(click, {"replace_original": True, "text": text, "blocks": blocks})
        notifier = self._notifier()
        if notifier is None:
            return
        here = (click.channel_id, click.message_ts) if click.channel_id and click.message_ts else None
        if not shown and here:
            try:
                await run_in_threadpool(
                    call_slack,
                    notifier.client.chat_update,
                    channel=here[0],
                    ts=here[1],
                    text=text,
                    blocks=blocks,
                )
            except (SlackRetryable, SlackRejected) as exc:
                log.warning("could not show the outcome on %s/%s: %s", here[0], here[1], exc)
        if decided:  # reminders of the same stage carry buttons too: they have nothing left to decide
            await run_in_threadpool(notifier.resolve_buttons, click.migration, stage, text, skip=here)


def interactions_router(service: InteractionService | None = None) -> APIRouter:
    """``POST /slack/interactions`` (include it in ``pairshift api``'s app)."""
    service = service or InteractionService()
    router = APIRouter(tags=["slack"])

    @router.post("/slack/interactions", responses={400: {}, 401: {}, 403: {}, 413: {}, 503: {}})
    async def slack_interactions(request: Request) -> Response:
        """Slack's interactivity endpoint: verify, refuse replays, acknowledge, decide in background."""
        settings = service.settings_factory()
        if settings.signing_secret is None:
            return JSONResponse({"error": "slack is not configured (SLACK_SIGNING_SECRET)"}, status_code=503)
        body = await request.body()  # at most 64 KB: pairshift.api_guard.BodyLimit stops bigger ones
        signature = request.headers.get("x-slack-signature")
        verifier = SignatureVerifier(settings.signing_secret.get_secret_value())
        why = stale_or_forged(verifier, body, request.headers.get("x-slack-request-timestamp"), signature)
        if why is None and await run_in_threadpool(service.seen_before, f"sig:{signature}"):
            why = "replayed request (signature seen before)"
        if why is not None:
            client = request.client.host if request.client else None
            service.refuse_request(why, size=len(body), client=client)
            return JSONResponse({"error": why}, status_code=403 if why.startswith("replayed") else 401)
        payload = parse_form(body)
        if payload is None:
            return JSONResponse({"error": "expected a form field 'payload' holding JSON"}, status_code=400)
        if parse_interaction(payload) is None:
            return JSONResponse({"error": "not a Slack interaction payload"}, status_code=400)
        service.dispatch(payload, channel="slack")
        return Response(status_code=200)

    return router
