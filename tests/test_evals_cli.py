"""`pairshift eval` in-process against the dev server: exit codes, --json keys, the HTML file, bad input."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.worker import Worker
from test_evals_support import eval_registry  # noqa: F401 - fixture

from pairshift.cli import run
from pairshift.registry.store import Registry
from pairshift.settings import get_settings
from pairshift.temporal_client import connect


@pytest.fixture
def worker_thread(dev_env, eval_registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    """A pairshift worker on its own thread and loop (the CLI runs asyncio.run on the test's thread)."""
    queue = f"eval-cli-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PAIRSHIFT_TASK_QUEUE", queue)
    monkeypatch.setenv("PAIRSHIFT_TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    get_settings.cache_clear()
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        from activities.evals import EVAL_ACTIVITIES
        from workflows.evals import EVAL_WORKFLOWS

        client = await connect()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            async with Worker(
                client,
                task_queue=queue,
                workflows=EVAL_WORKFLOWS,
                activities=EVAL_ACTIVITIES,
                activity_executor=pool,
            ):
                started.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(20), "worker did not start"
    yield
    stop.set()
    thread.join(20)


def test_eval_json_html_and_exit_code(
    worker_thread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "report.html"
    code = run(
        [
            "eval",
            "support-triage",
            "--to-model",
            "sim-fresh-2025-09",
            "--to-prompt",
            "support-triage@2",
            "--json",
            "--html",
            str(html),
        ]
    )
    out = capsys.readouterr().out
    report = json.loads(out)
    assert code == (0 if report["gate"]["decision"] == "pass" else 1)
    assert set(report["arms"]) == {"baseline", "prompt_only", "model_only", "joint"}
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained


def test_failing_gate_exits_1_and_prints_the_table(worker_thread, capsys: pytest.CaptureFixture[str]) -> None:
    # Model-only to sim-fresh under prompt v1: the fresh snapshot wraps JSON in prose, is-json newly fails.
    code = run(["eval", "support-triage", "--to-model", "sim-fresh-2025-09", "--epochs", "1"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 1, captured
    assert "model_only" in out and "Gate: FAIL" in out and "blocking assertion is-json newly fails" in out
    assert "eval gate fail" in captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "nope", "--to-model", "sim-fresh-2025-09"], "unknown deployment 'nope'"),
        (["eval", "support-triage", "--to-model", "gpt-9"], "unknown model 'gpt-9'"),
        (
            ["eval", "support-triage", "--to-model", "sim-fresh-2025-09", "--to-prompt", "support-triage@9"],
            "unknown prompt version 'support-triage@9'",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    eval_registry: Registry,
    capsys: pytest.CaptureFixture[str],  # noqa: F811
    args: list[str],
    message: str,
) -> None:
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
