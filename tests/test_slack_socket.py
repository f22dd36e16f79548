"""Socket Mode shares the HTTP route's handler: acknowledged at once, redeliveries ignored, same decision
rules."""

from __future__ import annotations

import asyncio

from fake_slack import fake_slack  # noqa: F401  (fixture)
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from temporalio.worker import Worker
from test_slack_interactions import Rig, StandInMigration, click_payload
from typer.testing import CliRunner

from pairshift.cli.common import CLIError
from pairshift.cli.slack import app as slack_app
from pairshift.slack.socket_mode import SocketModeBridge


class Acks:
    """Records acknowledgements the way slack_sdk's client would send them."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_socket_mode_response(self, response: SocketModeResponse) -> None:
        self.sent.append(response.envelope_id)


async def deliver(bridge: SocketModeBridge, acks: Acks, req: SocketModeRequest) -> bool:
    """Deliver on a worker thread, as slack_sdk does, then wait for the dispatched click to be handled."""
    future = await asyncio.to_thread(bridge.on_request, acks, req)
    dispatched = await asyncio.wrap_future(future) if future is not None else False
    await bridge.service.drain()
    return dispatched


async def test_socket_mode_click_decides_and_a_redelivery_is_ignored(
    time_skipping_env, fake_slack, sqlite_registry
):
    rig = Rig(time_skipping_env, fake_slack, sqlite_registry)
    async with Worker(time_skipping_env.client, task_queue=rig.task_queue, workflows=[StandInMigration]):
        await rig.start()
        bridge, acks = SocketModeBridge(rig.service, asyncio.get_running_loop()), Acks()
        req = SocketModeRequest(
            type="interactive",
            envelope_id="env-1",
            payload=click_payload(fake_slack, rig.migration, "U_EVE", run=rig.run_id),
        )
        assert await deliver(bridge, acks, req) is True
        st = await rig.status()
        assert st.votes == {} and "not an approver" in st.refusals[0].reason  # same rules as HTTP
        ok = SocketModeRequest(
            type="interactive",
            envelope_id="env-2",
            payload=click_payload(fake_slack, rig.migration, "U_BOB", run=rig.run_id),
        )
        assert await deliver(bridge, acks, ok) is True
        assert await deliver(bridge, acks, ok) is False, "a redelivered envelope is not decided twice"
        assert (await rig.status()).votes == {0: {"U_BOB": "approve"}}
        other = SocketModeRequest(type="events_api", envelope_id="env-3", payload={"event": {}})
        assert await deliver(bridge, acks, other) is False
        assert acks.sent == ["env-1", "env-2", "env-2", "env-3"], "every envelope is acknowledged"
        assert "Approved by <@U_BOB>" in rig.responses("U_BOB")[0]["text"]
    await rig.http.aclose()


def test_socket_command_names_the_missing_tokens(monkeypatch) -> None:
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    result = CliRunner().invoke(slack_app, ["socket"])
    assert isinstance(result.exception, CLIError) and result.exception.code == 2
    assert str(result.exception) == "Socket Mode needs SLACK_APP_TOKEN in the environment"
