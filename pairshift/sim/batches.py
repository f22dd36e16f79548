"""Anthropic Message Batches on the fake server: create, poll, and read the results file (JSONL).

A batch's requests are checked like live ones (model, the snapshot's request rules) but skip rate limits and
faults; each line is answered at creation and the batch reports ``in_progress`` for ``batch_delay_ms``, then
``ended`` with an absolute ``results_url``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from pairshift.sim import wire
from pairshift.sim.snapshots import simulate
from pairshift.sim.wire import Failure

if TYPE_CHECKING:
    from pairshift.sim.server import SimState


@dataclass
class Batch:
    """One message batch: its lines are answered when it is created."""

    id: str
    created: datetime
    ends: datetime
    lines: list[dict[str, Any]]


def add_batch_routes(app: FastAPI, state: SimState) -> None:
    """The Message Batches routes on ``app``, answering from ``state``."""
    # Imported here: server.py imports this module to build its app.
    from pairshift.sim.server import _check_rules, _error_response, _json_body

    def batch_json(batch: Batch, request: Request) -> dict[str, Any]:
        ended = datetime.now(UTC) >= batch.ends
        url = str(request.url_for("batch_results", batch_id=batch.id)) if ended else None
        return wire.batch_object(batch.id, batch.lines, batch.created, batch.ends, ended, url)

    def one_line(item: Any) -> dict[str, Any]:
        custom_id = item.get("custom_id", "") if isinstance(item, dict) else ""
        try:
            req = wire.parse_anthropic(item.get("params") if isinstance(item, dict) else None)
            resolved, behaviour = state.resolve(req.model)
            _check_rules(state, "anthropic", behaviour, req)
        except Failure as failure:
            return wire.batch_line(custom_id, None, None, failure.kind, failure.message)
        state.stats[resolved]["batch_requests"] += 1
        return wire.batch_line(custom_id, resolved, simulate(behaviour, req.system, req.messages, req.params))

    @app.post("/v1/messages/batches")
    async def create_batch(request: Request) -> Response:
        try:
            body = await _json_body(request)
            items = body.get("requests") if isinstance(body, dict) else None
            if not isinstance(items, list) or not items:
                raise Failure("invalid_request", "requests: a non-empty list is required")
        except Failure as failure:
            return _error_response("anthropic", failure)
        now = datetime.now(UTC)
        batch = Batch(
            f"msgbatch_{uuid.uuid4().hex[:24]}",
            now,
            now + timedelta(milliseconds=state.settings.batch_delay_ms),
            [one_line(i) for i in items],
        )
        state.batches[batch.id] = batch
        return JSONResponse(batch_json(batch, request))

    def find(batch_id: str) -> Batch:
        if batch_id not in state.batches:
            raise Failure("not_found", f"message batch {batch_id} not found")
        return state.batches[batch_id]

    @app.get("/v1/messages/batches/{batch_id}")
    async def get_batch(batch_id: str, request: Request) -> Response:
        try:
            return JSONResponse(batch_json(find(batch_id), request))
        except Failure as failure:
            return _error_response("anthropic", failure)

    @app.get("/v1/messages/batches/{batch_id}/results", name="batch_results")
    async def batch_results(batch_id: str) -> Response:
        try:
            batch = find(batch_id)
            if datetime.now(UTC) < batch.ends:
                raise Failure("invalid_request", f"message batch {batch_id} has not ended yet")
        except Failure as failure:
            return _error_response("anthropic", failure)
        return Response(wire.jsonl(batch.lines), media_type="application/x-jsonl")
