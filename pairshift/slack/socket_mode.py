"""Socket Mode: the same button clicks as ``POST /slack/interactions``, for installs without a public URL.

Slack sends interactivity payloads over a WebSocket opened with the app-level token (``SLACK_APP_TOKEN``); the
connection itself is the authentication, so there is no signature to verify. Each envelope is acknowledged at
once (Slack's 3-second rule), a redelivered envelope id is ignored (the registry's seen-requests table, shared
with the HTTP route's replay check), and the payload goes to :meth:`InteractionService.dispatch`: one handler
for both transports, so both obey the same rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Protocol

from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from pairshift.slack import SlackSettings, slack_settings, web_client
from pairshift.slack.interactions import InteractionService

log = logging.getLogger("pairshift.slack")


class Acknowledger(Protocol):
    """The one call of a Socket Mode client the bridge needs (tests pass a fake)."""

    def send_socket_mode_response(self, response: SocketModeResponse) -> None: ...


class SocketModeBridge:
    """Turns Socket Mode requests (on slack_sdk's threads) into dispatches on the service's event loop."""

    def __init__(self, service: InteractionService, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.loop = loop

    def on_request(
        self, client: Acknowledger, req: SocketModeRequest
    ) -> concurrent.futures.Future[bool] | None:
        """A slack_sdk request listener; returns the scheduled dispatch (None when nothing was dispatched)."""
        client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        if req.type != "interactive":
            return None
        if self.service.seen_before(f"envelope:{req.envelope_id}"):
            log.info("socket mode envelope %s delivered again: ignored", req.envelope_id)
            return None
        return asyncio.run_coroutine_threadsafe(self._dispatch(req.payload), self.loop)

    async def _dispatch(self, payload: dict[str, Any]) -> bool:
        return self.service.dispatch(payload, channel="slack")


def require_socket_settings(settings: SlackSettings) -> None:
    """Both tokens are needed: the app token opens the socket, the bot token updates messages."""
    missing = [
        name
        for name, value in (("SLACK_APP_TOKEN", settings.app_token), ("SLACK_BOT_TOKEN", settings.bot_token))
        if value is None
    ]
    if missing:
        raise ValueError(f"Socket Mode needs {' and '.join(missing)} in the environment")


async def run_socket_mode(
    stop: asyncio.Event, service: InteractionService | None = None, settings: SlackSettings | None = None
) -> None:
    """Receive clicks until ``stop`` is set; clicks in progress finish before this returns."""
    settings = settings or slack_settings()
    require_socket_settings(settings)
    service = service or InteractionService(settings_factory=lambda: settings)
    client = SocketModeClient(
        app_token=settings.app_token.get_secret_value(), web_client=web_client(settings)
    )
    bridge = SocketModeBridge(service, asyncio.get_running_loop())
    client.socket_mode_request_listeners.append(bridge.on_request)
    await asyncio.to_thread(client.connect)
    log.warning("pairshift slack socket: connected, waiting for button clicks")
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(client.close)
        await service.drain()
