"""Driving the Temporal Web UI (2.54, as `temporal server start-dev --ui-port` serves it) from a real browser.

Debian's headless Chromium through Playwright's Python API (never `playwright install`: nothing can be
downloaded in CI). The selectors are the UI's own: ``data-testid`` attributes where the UI has them
(``workflowId``, ``taskQueue``, ``workflowType``, ``start-workflow-button``, ``confirm-modal-button``),
otherwise roles and visible names ("More Actions", "Send a Signal"). The UI's JSON inputs are CodeMirror
editors: text is inserted with ``keyboard.insert_text`` (typing would trigger the editor's bracket
auto-closing), and the editor is blurred before submitting, because the form reads (and reformats) the
editor's value on blur.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# ENGINEERING.md's flags: no sandbox (CI runs as root), and no background traffic to the internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 20_000


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_chromium() -> Path:
    """The browser, or skip (a laptop without it); under CI a missing browser is a failure, never a skip."""
    if CHROMIUM.exists():
        return CHROMIUM
    if in_ci():
        pytest.fail(f"{CHROMIUM} is missing under CI: .ci/run must `apt-get install -y chromium`")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); set CI=true to make this a failure")


class UIError(AssertionError):
    """The UI did not do what the test asked; the message says where screenshots are."""


@asynccontextmanager
async def browser_page(shots: Path) -> AsyncIterator[Any]:
    """A fresh page in headless Chromium; on any exception, a screenshot and the HTML go to ``shots``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(require_chromium()), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            try:
                yield page
            except BaseException as exc:
                saved = await _capture(page, shots)
                raise UIError(f"{type(exc).__name__}: {exc}\nscreenshots: {saved}") from exc
        finally:
            await browser.close()


async def _capture(page: Any, shots: Path) -> Path:
    shots.mkdir(parents=True, exist_ok=True)
    n = len(list(shots.glob("*.png")))
    try:
        await page.screenshot(path=str(shots / f"failure-{n}.png"), full_page=True)
        (shots / f"failure-{n}.html").write_text(await page.content())
    except Exception as exc:  # noqa: BLE001 - a dead page must not hide the real failure
        (shots / f"failure-{n}.txt").write_text(f"could not capture the page: {exc}\n")
    return shots


async def snapshot(page: Any, shots: Path, name: str) -> None:
    """A screenshot of a step that went right (kept next to failure shots, for reading a failed run)."""
    shots.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


async def fill_code_editor(editor: Any, value: Any) -> None:
    """Put ``value`` (as JSON) into one of the UI's CodeMirror payload editors."""
    await editor.click()
    await editor.page.keyboard.insert_text(json.dumps(value))
    await editor.blur()


async def start_workflow(
    page: Any,
    ui_url: str,
    *,
    namespace: str,
    workflow_id: str,
    task_queue: str,
    workflow_type: str,
    payload: dict[str, Any],
) -> None:
    """Fill and submit the Start Workflow form; returns on the new workflow's page."""
    await page.goto(f"{ui_url}/namespaces/{namespace}/workflows/start-workflow")
    await page.get_by_test_id("workflowId").fill(workflow_id)
    await page.get_by_test_id("taskQueue").fill(task_queue)
    await page.get_by_test_id("workflowType").fill(workflow_type)
    # Leaving the task-queue field makes the UI look for pollers: "Active" = it sees our worker on that queue.
    await page.get_by_text("Task Queue is Active").wait_for()
    await fill_code_editor(page.get_by_role("textbox", name="Data"), payload)
    async with page.expect_response(
        lambda r: r.request.method == "POST" and f"/workflows/{workflow_id}" in r.url
    ) as started:
        await page.get_by_test_id("start-workflow-button").click()
    response = await started.value
    if not response.ok:
        raise UIError(f"the UI's start request answered {response.status}: {await response.text()}")
    # The UI stays on the form and links the new workflow from a toast: follow it, as a person would.
    await page.get_by_role("link", name="Workflow started successfully").click()
    await page.get_by_role("heading", name=workflow_id).wait_for()


async def send_signal(
    page: Any, ui_url: str, *, namespace: str, workflow_id: str, signal: str, payload: dict[str, Any]
) -> None:
    """Open the workflow's page and send ``signal`` with ``payload`` through More Actions > Send a Signal."""
    await page.goto(f"{ui_url}/namespaces/{namespace}/workflows/{workflow_id}")
    await page.get_by_role("button", name="More Actions").click()
    await page.get_by_role("menuitem", name="Send a Signal").click()
    dialog = page.get_by_role("dialog")
    # The UI lists the workflow's own signal names (from the SDK's metadata query): picking ours from the list
    # also checks the worker registered it under that name.
    await dialog.get_by_role("button", name="Select a signal").click()
    await page.get_by_role("option", name=signal, exact=True).click()
    await fill_code_editor(dialog.get_by_role("textbox", name="Data"), payload)
    async with page.expect_response(
        lambda r: r.request.method == "POST" and f"/signal/{signal}" in r.url
    ) as sent:
        await dialog.get_by_test_id("confirm-modal-button").click()
    response = await sent.value
    if not response.ok:
        raise UIError(f"the UI's signal request answered {response.status}: {await response.text()}")


async def expect_execution_status(
    page: Any, ui_url: str, *, namespace: str, workflow_id: str, status: str
) -> None:
    """Open the workflow's page; wait until its status badge reads ``status`` (the page refreshes itself)."""
    from playwright.async_api import expect

    await page.goto(f"{ui_url}/namespaces/{namespace}/workflows/{workflow_id}")
    await expect(page.get_by_test_id("execution-status")).to_have_text(status, ignore_case=True)
