"""OpenAI Files + Batch API on the fake server: upload JSONL, create/retrieve/cancel batches.

Routes: ``POST /v1/files`` (multipart: ``file``, ``purpose``), ``GET /v1/files/{id}``, ``GET
/v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST
/v1/batches/{id}/cancel``. As OpenAI does:

- the create itself is refused (400/404) for a missing or unknown ``input_file_id``, a file whose purpose is
  not ``batch``, an ``endpoint`` other than ``/v1/chat/completions`` or ``/v1/responses``, a
  ``completion_window`` other than ``24h``; a ``.jsonl`` name is required for ``purpose=batch`` uploads;
- the file's lines are validated during ``validating``: a line that is not a JSON object, lacks
  ``custom_id`` / ``method`` / ``url`` / ``body``, uses another method or URL than the batch's endpoint,
  repeats a ``custom_id`` or names another model than the first line makes the batch ``failed`` with
  ``errors.data`` (``code``, ``message``, ``param``, ``line``), and nothing is run;
- statuses: ``validating`` (first 10% of ``batch_delay_ms``) -> ``in_progress`` -> ``finalizing`` (last 10%)
  -> ``completed``, or ``expired`` when some lines ran out of the window (``batch_expire_rate``), or
  ``cancelling`` -> ``cancelled``; ``request_counts`` are ``{total, completed, failed}``;
- once the batch is over, successes go to ``output_file_id`` and everything else to ``error_file_id`` (each
  null when empty): ``{"id": "batch_req_…", "custom_id", "response": {"status_code", "request_id", "body"},
  "error": null}``, or ``"response": null, "error": {"code": "batch_expired" | "batch_cancelled", …}``.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from pairshift.sim import wire, wire_responses
from pairshift.sim.batch_jobs import Job, JobLine, draw_fate
from pairshift.sim.snapshots import simulate
from pairshift.sim.wire import Failure

if TYPE_CHECKING:
    from pairshift.sim.server import SimState

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ENDPOINTS = ("/v1/chat/completions", "/v1/responses")
MAX_REQUESTS = 50_000
EXPIRED = "This request could not be executed before the completion window expired."
CANCELLED = "This request was not executed because the batch was cancelled."


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created: int

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created,
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


def _ts(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def _param_error(
    message: str, param: str | None, code: str | None = None, kind: Any = "invalid_request"
) -> Failure:
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return Failure(kind, message, body=body)


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename, bytes)."""
    if not content_type.startswith("multipart/form-data"):
        raise _param_error("Expected a multipart/form-data body with 'file' and 'purpose'.", None)
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True) or b""
            parts[str(name)] = (part.get_filename(), payload)
    return parts


def _status(job: Job, now: datetime) -> str:
    if job.meta.get("errors"):
        return "failed"
    phase = job.phase(now)
    if phase == "canceling":
        return "cancelling"
    if phase == "canceled":
        return "cancelled"
    if phase == "ended":
        return "expired" if job.expired_any() else "completed"
    elapsed = (now - job.created) / job.delay if job.delay > timedelta(0) else 1.0
    return "validating" if elapsed < 0.1 else ("finalizing" if elapsed >= 0.9 else "in_progress")


def _validate_lines(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the lines, the validation errors) of an input file, as OpenAI reports them in ``errors.data``."""
    items: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None

    def err(code: str, message: str, line: int, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": line})

    for n, raw in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            err("invalid_json_line", "This line is not parseable as valid JSON.", n)
            continue
        if not isinstance(item, dict):
            err("invalid_json_line", "This line is not a JSON object.", n)
            continue
        missing = [k for k in ("custom_id", "method", "url", "body") if k not in item]
        if missing:
            err("missing_required_parameter", f"Missing required parameter: '{missing[0]}'.", n, missing[0])
            continue
        if item["method"] != "POST":
            err("invalid_method", "The only supported method is POST.", n, "method")
        elif item["url"] != endpoint:
            err(
                "invalid_url",
                f"The URL provided for this request does not match the batch endpoint {endpoint}.",
                n,
                "url",
            )
        elif item["custom_id"] in seen:
            err(
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another request. "
                "The custom_id parameter must be unique for each request in a batch.",
                n,
                "custom_id",
            )
        elif model is not None and isinstance(item["body"], dict) and item["body"].get("model") != model:
            err(
                "mismatched_model",
                "A batch input file must contain requests for a single model.",
                n,
                "body.model",
            )
        else:
            seen.add(item["custom_id"])
            if model is None and isinstance(item["body"], dict):
                model = item["body"].get("model")
            items.append(item)
    if not items and not errors:
        err("empty_file", "The batch input file is empty.", 1)
    if len(items) > MAX_REQUESTS:
        err("too_many_requests", f"A batch may contain at most {MAX_REQUESTS} requests.", MAX_REQUESTS + 1)
    return items, errors


def add_openai_batch_routes(app: FastAPI, state: SimState) -> None:
    """The Files and Batch API routes on ``app``, answering from ``state``."""
    from pairshift.sim.server import _check_rules, _error_response, _json_body

    def new_file(filename: str, purpose: str, content: bytes) -> SimFile:
        f = SimFile(f"file-{uuid.uuid4().hex[:22]}", filename, purpose, content, int(time.time()))
        state.files[f.id] = f
        return f

    def find_file(file_id: str) -> SimFile:
        if file_id not in state.files:
            raise _param_error(f"No such File object: {file_id}", "id", kind="not_found")
        return state.files[file_id]

    def find(batch_id: str) -> Job:
        job = state.batches.get(batch_id)
        if job is None or job.wire != "openai":
            raise _param_error(f"No batch found with id '{batch_id}'.", None, kind="not_found")
        return job

    def one_line(item: dict[str, Any], endpoint: str) -> JobLine:
        custom_id = str(item["custom_id"])
        responses = endpoint == "/v1/responses"
        try:
            parse = wire_responses.parse_responses if responses else wire.parse_openai
            req = parse(item["body"])
            resolved, behaviour = state.resolve(req.model)
            _check_rules(state, "responses" if responses else "openai", behaviour, req)
        except Failure as failure:
            status, body = wire.error_body("openai", failure.kind, failure.message, failure.body)
            return JobLine(custom_id, "error", {"status": failure.status or status, "body": body})
        state.stats[resolved]["batch_requests"] += 1
        s = state.settings
        fate = draw_fate(state.rng, s.batch_failure_rate, s.batch_expire_rate)
        if fate == "error":
            status, body = wire.error_body(
                "openai", "api_error", "The server had an error processing your request."
            )
            return JobLine(custom_id, "error", {"status": status, "body": body}, resolved)
        out = simulate(behaviour, req.system, req.messages, req.params)
        answer = (
            wire_responses.responses_object(resolved, out)
            if responses
            else wire.openai_completion(resolved, out)
        )
        return JobLine(custom_id, fate or "ok", answer, resolved)

    def finish_files(job: Job, now: datetime) -> None:
        """Write the output and error files once the batch is over (once)."""
        if "files_written" in job.meta or _status(job, now) not in ("completed", "expired", "cancelled"):
            return
        out, errs = [], []
        for i, line in enumerate(job.lines):
            outcome = job.outcome(i, now)
            row: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line.custom_id}
            request_id = f"req_{uuid.uuid4().hex[:24]}"
            if outcome == "succeeded":
                out.append(
                    {
                        **row,
                        "response": {"status_code": 200, "request_id": request_id, "body": line.payload},
                        "error": None,
                    }
                )
            elif outcome == "errored":
                response = {
                    "status_code": line.payload["status"],
                    "request_id": request_id,
                    "body": line.payload["body"],
                }
                errs.append({**row, "response": response, "error": None})
            else:
                code, message = (
                    ("batch_cancelled", CANCELLED) if outcome == "canceled" else ("batch_expired", EXPIRED)
                )
                errs.append({**row, "response": None, "error": {"code": code, "message": message}})
        job.meta["files_written"] = True
        if out:
            job.meta["output_file_id"] = new_file(
                "batch_output.jsonl", "batch_output", wire.jsonl(out).encode()
            ).id
        if errs:
            job.meta["error_file_id"] = new_file(
                "batch_errors.jsonl", "batch_output", wire.jsonl(errs).encode()
            ).id

    def batch_json(job: Job, now: datetime) -> dict[str, Any]:
        finish_files(job, now)
        status, counts = _status(job, now), job.counts(now)
        over = status in ("completed", "expired", "cancelled", "failed")
        errors = job.meta.get("errors")
        total = 0 if status in ("validating", "failed") else len(job.lines)
        start, ended = job.created + job.delay * 0.1, job.ended_at()
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": job.meta["endpoint"],
            "model": job.lines[0].model if job.lines else None,
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": job.meta["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "output_file_id": job.meta.get("output_file_id"),
            "error_file_id": job.meta.get("error_file_id"),
            "created_at": _ts(job.created),
            "in_progress_at": _ts(start) if status not in ("validating", "failed") else None,
            "expires_at": _ts(job.created + timedelta(hours=24)),
            "finalizing_at": _ts(job.created + job.delay * 0.9)
            if status in ("finalizing", "completed", "expired")
            else None,
            "completed_at": _ts(ended) if status == "completed" else None,
            "failed_at": _ts(job.created) if status == "failed" else None,
            "expired_at": _ts(ended) if status == "expired" else None,
            "cancelling_at": _ts(job.cancel_at),
            "cancelled_at": _ts(ended) if status == "cancelled" else None,
            "request_counts": {
                "total": total,
                "completed": counts["succeeded"] if total else 0,
                "failed": (len(job.lines) - counts["succeeded"] if over else counts["errored"])
                if total
                else 0,
            },
            "metadata": job.meta.get("metadata"),
        }

    @app.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        try:
            parts = parse_multipart(request.headers.get("content-type", ""), await request.body())
            purpose = parts.get("purpose", (None, b""))[1].decode()
            if "file" not in parts:
                raise _param_error(
                    "Missing required parameter: 'file'.", "file", "missing_required_parameter"
                )
            if purpose not in PURPOSES:
                raise _param_error(f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", "purpose")
            filename, content = parts["file"]
            filename = filename or "upload"
            if purpose == "batch" and not filename.endswith(".jsonl"):
                raise _param_error("Invalid file format for Batch API. Must be .jsonl", "file")
        except Failure as failure:
            return _error_response("openai", failure)
        return JSONResponse(new_file(filename, purpose, content).json())

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str) -> Response:
        try:
            return JSONResponse(find_file(file_id).json())
        except Failure as failure:
            return _error_response("openai", failure)

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        try:
            return Response(find_file(file_id).content, media_type="application/octet-stream")
        except Failure as failure:
            return _error_response("openai", failure)

    @app.post("/v1/batches")
    async def create_batch(request: Request) -> Response:
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise _param_error("The request body must be a JSON object.", None)
            for key in ("input_file_id", "endpoint", "completion_window"):
                if key not in body:
                    raise _param_error(
                        f"Missing required parameter: '{key}'.", key, "missing_required_parameter"
                    )
            if body["endpoint"] not in ENDPOINTS:
                raise _param_error(
                    f"Invalid value for 'endpoint': must be one of {list(ENDPOINTS)}.", "endpoint"
                )
            if body["completion_window"] != "24h":
                raise _param_error(
                    "Invalid value for 'completion_window': only '24h' is supported.", "completion_window"
                )
            source = find_file(str(body["input_file_id"]))
            if source.purpose != "batch":
                raise _param_error(
                    f"File {source.id} has purpose '{source.purpose}', not 'batch'.", "input_file_id"
                )
        except Failure as failure:
            return _error_response("openai", failure)
        items, errors = _validate_lines(source.content, body["endpoint"])
        s = state.settings
        lines = [] if errors else [one_line(item, body["endpoint"]) for item in items]
        job = Job(
            f"batch_{uuid.uuid4().hex[:24]}",
            "openai",
            datetime.now(UTC),
            timedelta(milliseconds=s.batch_delay_ms),
            lines,
            timedelta(milliseconds=s.batch_cancel_ms),
            meta={
                "endpoint": body["endpoint"],
                "input_file_id": source.id,
                "metadata": body.get("metadata"),
                "errors": errors,
            },
        )
        state.batches[job.id] = job
        return JSONResponse(batch_json(job, job.created))

    @app.get("/v1/batches")
    async def list_batches() -> Response:
        now = datetime.now(UTC)
        data = [batch_json(j, now) for j in reversed(state.batches.values()) if j.wire == "openai"]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return JSONResponse(
            {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}
        )

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str) -> Response:
        try:
            job = find(batch_id)
        except Failure as failure:
            return _error_response("openai", failure)
        job.polls += 1
        await asyncio.sleep(state.settings.batch_status_delay_ms / 1000)
        return JSONResponse(batch_json(job, datetime.now(UTC)))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> Response:
        now = datetime.now(UTC)
        try:
            job = find(batch_id)
            status = _status(job, now)
            if status not in ("validating", "in_progress", "finalizing"):
                raise _param_error(
                    f"Cannot cancel a batch with status '{status}'.", None, kind="invalid_request"
                )
        except Failure as failure:
            return _error_response("openai", failure)
        job.cancel_at = now
        return JSONResponse(batch_json(job, now))
