"""`pairshift doctor`: each check's logic over what was observed (tables), the command's lines, exit code and
JSON, and one run against a real Temporal dev server with a worker polling (e2e)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from pathlib import Path

import pytest

from pairshift.doctor import (
    calendar_check,
    key_check,
    namespace_check,
    queue_check,
    registry_check,
    short_error,
    slack_checks,
    temporal_check,
)

BOT = "xoxb-1234-5678-abcdef"
APP = "xapp-1-A111-222-abc"
SECRET = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "error, status",
    [(None, "ok"), ("connection refused", "fail"), ("timed out", "fail")],
)
def test_temporal_check(error, status):
    check = temporal_check("127.0.0.1:7233", error)
    assert check.status == status
    assert (check.fix is None) == (status == "ok")
    if error:
        assert error in check.detail and "pairshift server" in check.fix


@pytest.mark.parametrize(
    "found, error, status, words",
    [
        (True, None, "ok", "exists"),
        (False, None, "fail", "temporal operator namespace create"),
        (False, "permission denied", "fail", "permission denied"),
    ],
)
def test_namespace_check(found, error, status, words):
    check = namespace_check("default", found, error)
    assert check.status == status
    assert words in check.line()


@pytest.mark.parametrize(
    "ages, error, status, words",
    [
        ([3.0], None, "ok", "1 poller(s), last poll 3s ago"),
        ([200.0, 10.0], None, "ok", "1 poller(s), last poll 10s ago"),  # only the fresh one counts
        ([], None, "fail", "no worker polls it"),
        ([121.0], None, "fail", "no poll for 121s"),  # listed, but stopped polling
        (None, "unavailable", "fail", "cannot describe"),
    ],
)
def test_queue_check(ages, error, status, words):
    check = queue_check("pairshift", "workflow", ages, error)
    assert check.status == status and words in check.line()
    if status == "fail" and error is None:
        assert "pairshift worker" in check.fix


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"exists": False}, "fail", "pairshift apply"),
        ({"exists": True, "error": "connection refused"}, "fail", "connection refused"),
        ({"exists": True, "current": ["0006"], "heads": ["0006"]}, "ok", "at head (0006)"),
        ({"exists": True, "current": ["0004"], "heads": ["0006"]}, "fail", "at 0004, head is 0006"),
        ({"exists": True, "current": [], "heads": ["0006"]}, "fail", "at no revision"),
    ],
)
def test_registry_check(kwargs, status, words):
    check = registry_check("sqlite:///x/registry.db", **kwargs)
    assert check.status == status and words in check.line()


@pytest.mark.parametrize(
    "provider, key_env, base_url, env, status, words",
    [
        ("sim", None, None, {}, "ok", "no key needed"),
        ("anthropic", None, None, {"ANTHROPIC_API_KEY": "k"}, "ok", "ANTHROPIC_API_KEY is set"),
        ("anthropic", None, None, {}, "fail", "export ANTHROPIC_API_KEY"),
        ("anthropic", None, None, {"OPENAI_API_KEY": "k"}, "fail", "ANTHROPIC_API_KEY is not set"),
        ("openai", None, None, {}, "fail", "export OPENAI_API_KEY"),
        ("openai", "TEAM_API_KEY", None, {"OPENAI_API_KEY": "k"}, "fail", "export TEAM_API_KEY"),
        ("openai", "TEAM_API_KEY", None, {"TEAM_API_KEY": "k"}, "ok", "TEAM_API_KEY is set"),
        ("openai", None, "http://127.0.0.1:8787/v1", {}, "ok", "loopback"),
        ("openai", None, None, {"OPENAI_BASE_URL": "http://localhost:9/v1"}, "ok", "loopback"),
        ("anthropic", None, None, {"OPENAI_BASE_URL": "http://localhost:9/v1"}, "fail", "ANTHROPIC_API_KEY"),
        ("openai", None, "https://gw.example.com/v1", {}, "fail", "export OPENAI_API_KEY"),
        ("openai-compatible", None, "http://localhost:8000/v1", {}, "ok", "loopback"),
        ("openai-compatible", None, "https://vllm.example.com/v1", {}, "fail", "api_key_env"),
        (
            "openai-compatible",
            "VLLM_API_KEY",
            "https://vllm.example.com/v1",
            {"VLLM_API_KEY": "k"},
            "ok",
            "set",
        ),
    ],
)
def test_key_check(provider, key_env, base_url, env, status, words):
    check = key_check("m-1", provider, key_env, base_url, env)
    assert check.status == status and words in check.line()
    assert "k" not in check.detail.split()  # a key's value is never printed


@pytest.mark.parametrize(
    "channels, approvals, env, expected",
    [
        ({}, True, {}, {"slack": "ok"}),
        ({"p": "#ops"}, False, {}, {"slack bot token": "fail"}),
        ({"p": "#ops"}, False, {"SLACK_BOT_TOKEN": "xoxp-user-token"}, {"slack bot token": "fail"}),
        ({"p": "#ops"}, False, {"SLACK_BOT_TOKEN": BOT}, {"slack bot token": "ok"}),
        ({"p": "#ops"}, True, {"SLACK_BOT_TOKEN": BOT}, {"slack bot token": "ok", "slack buttons": "fail"}),
        (
            {"p": "#ops"},
            True,
            {"SLACK_BOT_TOKEN": BOT, "SLACK_SIGNING_SECRET": SECRET},
            {"slack bot token": "ok", "slack buttons": "ok"},
        ),
        (
            {"p": "#ops"},
            True,
            {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP},
            {"slack bot token": "ok", "slack buttons": "ok"},
        ),
        (
            {"p": "#ops"},
            True,
            {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": BOT},
            {"slack bot token": "ok", "slack app token": "fail"},
        ),
        (
            {"p": "#ops"},
            True,
            {"SLACK_BOT_TOKEN": BOT, "SLACK_SIGNING_SECRET": "not-hex"},
            {"slack bot token": "ok", "slack signing secret": "fail"},
        ),
    ],
)
def test_slack_checks(channels, approvals, env, expected):
    checks = slack_checks(channels, approvals, env)
    assert {c.name: c.status for c in checks} == expected
    for c in checks:
        assert all(secret not in c.line() for secret in (BOT, APP, SECRET))
        assert (c.fix is not None) == c.failed


@pytest.mark.parametrize(
    "newest, status, words",
    [
        (date(2026, 11, 1), "ok", "29 days ago"),
        (date(2026, 9, 1), "ok", "90 days ago"),
        (date(2026, 8, 31), "fail", "91 days ago"),
        (None, "fail", "no dated entry"),
    ],
)
def test_calendar_check(newest, status, words):
    check = calendar_check(newest, date(2026, 11, 30))
    assert check.status == status and words in check.line()


@pytest.mark.parametrize(
    "text, short",
    [
        (
            'Server connection error: tonic::transport::Error(Transport, ConnectionRefused, "x")',
            "connection refused",
        ),
        ("dns error: failed to lookup address information", "unknown host"),
        ("something else\nsecond line", "something else"),
    ],
)
def test_short_error(text, short):
    assert short_error(text) == short


# --- the command ---------------------------------------------------------------------------------


def _closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed once the with ends: connection refused


def test_doctor_on_a_fresh_home_fails_with_what_to_do(cli, fresh_home, monkeypatch):
    monkeypatch.setenv("PAIRSHIFT_TEMPORAL_ADDRESS", _closed_port())
    result = cli("doctor")
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].startswith("FAIL temporal: cannot reach") and "pairshift server" in lines[0]
    assert any(line.startswith("FAIL registry: no registry") and "pairshift apply" in line for line in lines)
    assert any(line.startswith("ok   provider calendar") for line in lines)
    assert not (fresh_home / "registry.db").exists()  # the doctor creates nothing


def test_doctor_json_reads_an_applied_registry(cli, pairshift_env, monkeypatch):
    from pairshift.apply import apply_path
    from pairshift.registry import open_registry

    apply_path(open_registry(), Path(__file__).parents[1] / "examples", by="test")
    monkeypatch.setenv("PAIRSHIFT_TEMPORAL_ADDRESS", _closed_port())
    result = cli("doctor", "--json")
    assert result.code == 1
    report = result.json()
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"] is False and status["temporal"] == "fail" and status["registry"] == "ok"
    assert status["key for sim-fresh-2025-09"] == "ok"
    assert all(c["fix"] for c in report["checks"] if c["status"] == "fail")


# --- against a real server -----------------------------------------------------------------------


@pytest.mark.e2e
async def test_doctor_against_a_dev_server_with_a_worker(dev_env, pairshift_env, monkeypatch):
    from pairshift.apply import apply_path
    from pairshift.doctor import run_checks
    from pairshift.registry import open_registry
    from pairshift.settings import get_settings
    from worker.main import build_worker

    apply_path(open_registry(), Path(__file__).parents[1] / "examples", by="test")
    queue = f"doctor-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PAIRSHIFT_TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("PAIRSHIFT_TASK_QUEUE", queue)
    get_settings.cache_clear()

    before = {c.name: c for c in await run_checks({}, date.today())}
    assert before["temporal"].status == "ok" and before["namespace"].status == "ok"
    assert before[f"worker on {queue} (workflow)"].status == "fail"
    assert "no worker polls it" in before[f"worker on {queue} (workflow)"].detail

    polls = (f"worker on {queue} (workflow)", f"worker on {queue} (activity)")
    async with build_worker(dev_env.client, task_queue=queue):
        # A started worker's first polls reach the server a moment later (the doctor reports what the server
        # has seen): check again until both pollers are seen, 30 s at most.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            after = {c.name: c for c in await run_checks({}, date.today())}
            seen = all(after[name].status == "ok" for name in polls)
            if seen or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    assert after[f"worker on {queue} (workflow)"].status == "ok"
    assert after[f"worker on {queue} (activity)"].status == "ok"
    assert after["registry"].status == "ok"
