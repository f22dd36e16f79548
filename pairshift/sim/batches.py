"""Anthropic Message Batches on the fake server: create, retrieve, list, cancel, and the results file (JSONL).

As the real service does, a create is refused at once (400) only for the shape of the batch itself: no
requests, a ``custom_id`` outside ``^[a-zA-Z0-9_-]{1,64}$``, a repeated ``custom_id``, more than 100,000
requests, a request without ``params``. Each request's ``params`` are checked like a live request (model,
the snapshot's request rules) but the outcome shows in its result line (``errored``), never in the create.
Batches skip rate limits and faults; ``batch_failure_rate`` / ``batch_expire_rate`` and the clock of
:mod:`.batch_jobs` decide what each line shows. ``processing_status`` is ``in_progress`` -> (``canceling``)
-> ``ended``; ``results_url`` is absolute and set only once the batch has ended.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from pairshift.sim import wire
from pairshift.sim.batch_jobs import Job, JobLine, draw_fate
from pairshift.sim.snapshots import simulate
from pairshift.sim.wire import Failure

if TYPE_CHECKING:
    from pairshift.sim.server import SimState

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def batch_json(job: Job, results_url: str | None, now: datetime) -> dict[str, Any]:
    """A Message Batch object at ``now``."""
    phase, counts = job.phase(now), job.counts(now)
    ended = phase in ("ended", "canceled")
    return {
        "id": job.id,
        "type": "message_batch",
        "processing_status": "ended" if ended else ("canceling" if phase == "canceling" else "in_progress"),
        "request_counts": {
            k: counts[k] for k in ("processing", "succeeded", "errored", "canceled", "expired")
        },
        "ended_at": _iso(job.ended_at()) if ended else None,
        "created_at": _iso(job.created),
        "expires_at": _iso(job.created + timedelta(hours=24)),
        "archived_at": None,
        "cancel_initiated_at": _iso(job.cancel_at),
        "results_url": results_url if ended else None,
    }


def result_line(job: Job, index: int, now: datetime) -> dict[str, Any]:
    line, outcome = job.lines[index], job.outcome(index, now)
    if outcome == "succeeded":
        return {"custom_id": line.custom_id, "result": {"type": "succeeded", "message": line.payload}}
    if outcome == "errored":
        return {"custom_id": line.custom_id, "result": {"type": "errored", "error": line.payload["body"]}}
    return {"custom_id": line.custom_id, "result": {"type": outcome}}


def _validate(body: Any) -> list[dict[str, Any]]:
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise Failure("invalid_request", "requests: Field required (a non-empty list of requests)")
    if len(items) > MAX_REQUESTS:
        raise Failure("invalid_request", f"requests: at most {MAX_REQUESTS} requests per batch")
    seen: set[str] = set()
    for i, item in enumerate(items):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise Failure(
                "invalid_request",
                f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
            )
        if custom_id in seen:
            raise Failure("invalid_request", f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        if not isinstance(item.get("params"), dict):
            raise Failure("invalid_request", f"requests.{i}.params: Field required")
    return items


def add_batch_routes(app: FastAPI, state: SimState) -> None:
    """The Message Batches routes on ``app``, answering from ``state``."""
    # Imported here: server.py imports this module to build its app.
    from pairshift.sim.server import _check_rules, _error_response, _json_body

    def one_line(item: dict[str, Any]) -> JobLine:
        custom_id = item["custom_id"]
        try:
            req = wire.parse_anthropic(item["params"])
            resolved, behaviour = state.resolve(req.model)
            _check_rules(state, "anthropic", behaviour, req)
        except Failure as failure:
            status, body = wire.error_body("anthropic", failure.kind, failure.message, failure.body)
            return JobLine(custom_id, "error", {"status": status, "body": body})
        state.stats[resolved]["batch_requests"] += 1
        s = state.settings
        fate = draw_fate(state.rng, s.batch_failure_rate, s.batch_expire_rate)
        if fate == "error":
            status, body = wire.error_body("anthropic", "api_error", "Internal server error")
            return JobLine(custom_id, "error", {"status": status, "body": body}, resolved)
        message = wire.anthropic_message(resolved, simulate(behaviour, req.system, req.messages, req.params))
        return JobLine(custom_id, fate or "ok", message, resolved)

    def results_url(job: Job, request: Request) -> str:
        return str(request.url_for("batch_results", batch_id=job.id))

    def find(batch_id: str) -> Job:
        job = state.batches.get(batch_id)
        if job is None or job.wire != "anthropic":
            raise Failure("not_found", f"message batch {batch_id} not found")
        return job

    @app.post("/v1/messages/batches")
    async def create_batch(request: Request) -> Response:
        try:
            items = _validate(await _json_body(request))
        except Failure as failure:
            return _error_response("anthropic", failure)
        s = state.settings
        job = Job(
            f"msgbatch_{uuid.uuid4().hex[:24]}",
            "anthropic",
            datetime.now(UTC),
            timedelta(milliseconds=s.batch_delay_ms),
            [one_line(i) for i in items],
            timedelta(milliseconds=s.batch_cancel_ms),
        )
        state.batches[job.id] = job
        # As of its creation: a batch is answered with every request processing (building the lines takes a
        # few ms, and on a loaded machine a short batch_delay_ms had already "processed" one; a test flaked).
        return JSONResponse(batch_json(job, results_url(job, request), job.created))

    @app.get("/v1/messages/batches")
    async def list_batches(request: Request) -> Response:
        now = datetime.now(UTC)
        jobs = [j for j in reversed(state.batches.values()) if j.wire == "anthropic"]
        data = [batch_json(j, results_url(j, request), now) for j in jobs]
        return JSONResponse(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    @app.get("/v1/messages/batches/{batch_id}")
    async def get_batch(batch_id: str, request: Request) -> Response:
        try:
            job = find(batch_id)
        except Failure as failure:
            return _error_response("anthropic", failure)
        job.polls += 1
        await asyncio.sleep(state.settings.batch_status_delay_ms / 1000)
        return JSONResponse(batch_json(job, results_url(job, request), datetime.now(UTC)))

    @app.post("/v1/messages/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        now = datetime.now(UTC)
        try:
            job = find(batch_id)
            if job.phase(now) != "running":
                raise Failure(
                    "invalid_request", f"message batch {batch_id} has already ended or is canceling"
                )
        except Failure as failure:
            return _error_response("anthropic", failure)
        job.cancel_at = now
        return JSONResponse(batch_json(job, results_url(job, request), now))

    @app.get("/v1/messages/batches/{batch_id}/results", name="batch_results")
    async def batch_results(batch_id: str) -> Response:
        now = datetime.now(UTC)
        try:
            job = find(batch_id)
            if job.phase(now) not in ("ended", "canceled"):
                raise Failure("invalid_request", f"message batch {batch_id} has not ended yet")
        except Failure as failure:
            return _error_response("anthropic", failure)
        lines = [result_line(job, i, now) for i in range(len(job.lines))]
        return Response(wire.jsonl(lines), media_type="application/binary")
