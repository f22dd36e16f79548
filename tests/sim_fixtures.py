"""Pytest fixtures that run the fake provider server on 127.0.0.1 for a test session.

``sim_server_session`` starts one server (a free port, uvicorn on a background thread) for the whole
session; ``sim_server`` hands it to a test after resetting it (start settings, empty stats and
rate windows), so tests can change settings without leaking into each other. Import both from
``tests/conftest.py``: ``from sim_fixtures import sim_server, sim_server_session``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pairshift.providers import ModelSpec, ProviderName
from pairshift.sim.server import RunningServer, start_in_thread


class SimHandle:
    """A running fake server and its admin routes, driven over HTTP like any other client."""

    def __init__(self, running: RunningServer) -> None:
        self.running = running
        self.base_url = running.base_url  # for the Anthropic SDK
        self.openai_base_url = running.openai_base_url  # for the OpenAI SDK
        self.http = httpx.Client(base_url=running.base_url, timeout=10.0)

    def _post(self, path: str, body: Any) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Merge top-level settings (see ``pairshift.sim.server.SimSettings``)."""
        result: dict[str, Any] = self._post("/_admin/settings", changes)
        return result

    def repoint(self, alias: str, target: str) -> None:
        self._post("/_admin/aliases", {alias: target})

    def rate_limit(self, model: str, requests: int, per_seconds: float = 60.0) -> None:
        self.settings(rate_limits={model: {"requests": requests, "per_seconds": per_seconds}})

    def faults(self, model: str = "*", **rates: float) -> None:
        self.settings(faults={model: rates})

    def script_faults(self, model: str, *faults: str) -> None:
        self._post("/_admin/faults/next", {"model": model, "faults": list(faults)})

    def retire(self, *models: str) -> None:
        self.settings(retired=list(models))

    def stats(self, model: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get("/_admin/stats").json()
        return data["models"].get(model, {}) if model else data

    def answers(self) -> dict[str, int]:
        """How often each distinct request was answered, by ``pairshift.sim.server.request_fingerprint``."""
        data: dict[str, dict[str, int]] = self.http.get("/_admin/answers").json()
        return data["answers"]

    def reset(self) -> None:
        self._post("/_admin/reset", {})

    def spec(self, model: str, provider: ProviderName = "anthropic", **fields: Any) -> ModelSpec:
        """A ModelSpec pointing at this server (never at a real host)."""
        base_url = self.base_url if provider == "anthropic" else self.openai_base_url
        return ModelSpec(id=model, provider=provider, base_url=base_url, **fields)


@pytest.fixture(scope="session")
def sim_server_session() -> Iterator[SimHandle]:
    running = start_in_thread()
    handle = SimHandle(running)
    try:
        yield handle
    finally:
        handle.http.close()
        running.stop()


@pytest.fixture
def sim_server(sim_server_session: SimHandle) -> SimHandle:
    sim_server_session.reset()
    return sim_server_session
