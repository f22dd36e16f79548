"""``RemoteRouter``: the router over HTTP, for Python apps that do not embed the registry.

The calls of :class:`pairshift.router.Router`, answered by ``pairshift api``: :meth:`RemoteRouter.resolve`
(``GET /v1/deployments/{name}/resolve``, scope ``resolve``), :meth:`RemoteRouter.complete` (``POST
/v1/deployments/{name}/complete``, scope ``complete``: the API renders, calls, checks and records) and
:meth:`RemoteRouter.record` (``POST /v1/observations``, scope ``observe``, for calls the app made itself). The
base URL comes from ``PAIRSHIFT_API_URL`` (default ``http://127.0.0.1:8080``) and the token from
``PAIRSHIFT_API_TOKEN`` unless given. A failure raises :class:`RemoteError` with the API's one-line error and
its status (a provider failure: 502/503/504 naming the pair).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import httpx

from pairshift.router import Assignment
from pairshift.tokens import TOKEN_ENV

URL_ENV = "PAIRSHIFT_API_URL"


class RemoteError(RuntimeError):
    """The API answered an error: ``status`` and its one-line ``error``."""

    def __init__(self, status: int, message: str, detail: list[Any] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.detail = status, message, detail or []


class RemoteRouter:
    """One deployment's router over ``pairshift api`` (module doc). Use as a context manager or close()."""

    def __init__(
        self,
        deployment: str,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 120.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.deployment = deployment
        token = token or os.environ.get(TOKEN_ENV)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._owns = http is None
        self.http = http or httpx.Client(
            base_url=base_url or os.environ.get(URL_ENV, "http://127.0.0.1:8080"),
            headers=headers,
            timeout=timeout_s,
        )
        if http is not None and token:
            self.http.headers.update(headers)

    def __enter__(self) -> RemoteRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns:
            self.http.close()

    def _answer(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": response.text[:300]}
            raise RemoteError(response.status_code, str(body.get("error")), body.get("detail"))
        return response.json()

    def resolve(self, unit_key: str) -> Assignment:
        """The pair serving ``unit_key`` now (sticky)."""
        path = f"/v1/deployments/{self.deployment}/resolve"
        return Assignment.model_validate(self._answer(self.http.get(path, params={"unit": unit_key})))

    def complete(self, unit_key: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Render, call, check and record on the API: ``{"output", "pair", "variant", "model", ...}``."""
        path = f"/v1/deployments/{self.deployment}/complete"
        answer: dict[str, Any] = self._answer(
            self.http.post(path, json={"unit": unit_key, "variables": variables})
        )
        return answer

    def record(
        self,
        unit_key: str,
        assignment: Assignment,
        *,
        latency_ms: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        outcome: str = "ok",
        score: float | None = None,
        resolved_model: str | None = None,
    ) -> None:
        """Send one observation of a call the app made itself (synchronously; batch many with the API)."""
        item = {
            "deployment": assignment.deployment,
            "pair": assignment.pair,
            "variant": assignment.variant,
            "unit": unit_key,
            "latency_ms": latency_ms,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost_usd,
            "outcome": outcome,
            "score": score,
            "at": datetime.now(UTC).isoformat(),
            "migration": assignment.migration,
            "resolved_model": resolved_model,
        }
        if assignment.percent is not None:  # an older API refuses the key (it forbids unknown fields)
            item["percent"] = assignment.percent
        self._answer(self.http.post("/v1/observations", json={"observations": [item]}))
