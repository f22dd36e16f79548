"""A fake Slack Web API for tests: the WebClient's ``base_url`` points here (127.0.0.1, a free port).

Speaks the few methods pairshift uses (``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
``users.info``, ``auth.test``) plus ``response_url`` hooks, records every call with its parameters, and can be
told to fail the next N Web API calls with a 5xx or a 429 + ``Retry-After`` (an outage or rate limit). Answers
follow Slack's shapes: ``{"ok": true, ...}``, or HTTP 200 ``{"ok": false, "error": "channel_not_found"}`` for
the errors Slack reports in-band.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

TOKEN = "xoxb-test-token"


class FakeSlack:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[dict[str, Any]] = []  # {"method", "params", "status"}
        self.users: dict[str, str | None] = {}  # user id -> email
        self.missing_channels: set[str] = {"#nowhere"}
        self._failures: list[tuple[int, float | None]] = []
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self.app = self._build()
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ control

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._failures += [(status, None)] * n

    def rate_limit_next(self, n: int, retry_after: float = 1) -> None:
        with self._lock:
            self._failures += [(429, retry_after)] * n

    def clear_failures(self) -> None:
        """End the outage: the next calls succeed."""
        with self._lock:
            self._failures.clear()

    def calls_to(self, method: str, *, ok_only: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            return [
                c["params"]
                for c in self.calls
                if c["method"] == method and (c["status"] == 200 or not ok_only)
            ]

    def attempts(self, method: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c["method"] == method)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, key: str = "r1") -> str:
        return f"http://127.0.0.1:{self.port}/response/{key}"

    # ------------------------------------------------------------ the app

    def _record(self, method: str, params: dict[str, Any], status: int) -> None:
        with self._lock:
            self.calls.append({"method": method, "params": params, "status": status})

    def _next_failure(self) -> tuple[int, float | None] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/{method}")
        async def api(method: str, request: Request) -> Response:
            params = await _params(request)
            failure = self._next_failure()
            if failure is not None:
                status, after = failure
                self._record(method, params, status)
                if status == 429:
                    return JSONResponse(
                        {"ok": False, "error": "ratelimited"},
                        status_code=429,
                        headers={"Retry-After": f"{after:g}"},
                    )
                return PlainTextResponse("upstream connect error", status_code=status)
            if request.headers.get("authorization") != f"Bearer {self.token}":
                self._record(method, params, 200)
                return JSONResponse({"ok": False, "error": "invalid_auth"})
            self._record(method, params, 200)
            return JSONResponse(self._answer(method, params))

        @app.post("/response/{key}")
        async def response_url(key: str, request: Request) -> Response:
            self._record(f"response_url:{key}", json.loads(await request.body() or b"{}"), 200)
            return PlainTextResponse("ok")

        return app

    def _answer(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "user_id": "UBOT", "team_id": "T0001"}
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            channel = str(p.get("channel", ""))
            if channel in self.missing_channels:
                return {"ok": False, "error": "channel_not_found"}
            channel_id = channel if channel.startswith("C") else "C" + str(abs(hash(channel)) % 10**8)
            ts = p.get("ts") or f"1700000000.{next(self._ts):06d}"
            key = "message_ts" if method == "chat.postEphemeral" else "ts"
            return {"ok": True, "channel": channel_id, key: ts}
        if method == "users.info":
            user = str(p.get("user", ""))
            if user not in self.users:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": {"id": user, "profile": {"email": self.users[user]}}}
        return {"ok": False, "error": "unknown_method"}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:  # polling: uvicorn offers no event to await from another thread
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake Slack server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            self._thread.join(timeout=10)


async def _params(request: Request) -> dict[str, Any]:
    """JSON body, form body or query string, whichever the WebClient used for this method."""
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    if body and "json" in ctype:
        params.update(json.loads(body))
    elif body:
        params.update({k: v[0] for k, v in parse_qs(body.decode()).items()})
    for key in ("blocks", "attachments"):  # form-encoded blocks arrive as a JSON string
        if isinstance(params.get(key), str):
            params[key] = json.loads(params[key])
    return params


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture
def slack_env(fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> FakeSlack:
    """SLACK_* settings pointing the process at the fake (signing secret ``test-secret``)."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake_slack.token)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "test-secret")
    monkeypatch.setenv("PAIRSHIFT_SLACK_API_URL", fake_slack.base_url)
    return fake_slack
