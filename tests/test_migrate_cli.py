"""`pairshift migrate ...` as a user runs it, against real `pairshift server` and `pairshift worker`
processes: the §11 `--json` keys, refusals with exit 2, a second start refused naming the live migration, and
abort."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from migration_harness import small_examples

from pairshift.embedded import EmbeddedStack

pytestmark = pytest.mark.e2e  # the pairshift CLI as processes against the embedded stack

PAIRSHIFT = str(Path(sys.executable).parent / "pairshift")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("migrate-cli") / "home"
    with EmbeddedStack(home) as st:
        config = small_examples(home.parent / "config")
        assert run(st, "apply", "-f", str(config)).returncode == 0
        yield st


def run(stack: EmbeddedStack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PAIRSHIFT, *args], env=stack.env, capture_output=True, text=True, timeout=120)


def run_json(stack: EmbeddedStack, *args: str):
    proc = run(stack, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_phase(stack: EmbeddedStack, phase: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        st = run_json(stack, "migrate", "status", "migration-support-triage")
        if st["phase"] == phase:
            return st
        assert time.monotonic() < deadline, f"still {st['phase']}: {st['history'][-3:]}"
        time.sleep(0.3)  # polling a query from another process


def test_migrate_verbs(stack: EmbeddedStack) -> None:
    bad = run(stack, "migrate", "start", "support-triage", "--to-model", "gpt-nope")
    assert bad.returncode == 2 and "unknown model 'gpt-nope'" in bad.stderr and "Traceback" not in bad.stderr

    started = run_json(
        stack,
        "migrate",
        "start",
        "support-triage",
        "--to-model",
        "sim-fresh-2025-09",
        "--to-prompt",
        "support-triage@2",
        "--as",
        "carol",
    )
    assert set(started) == {"id", "run_id", "deployment", "from_pair", "to_pair"}
    assert started["id"] == "migration-support-triage"
    assert started["to_pair"] == "support-triage@2+sim-fresh-2025-09"

    again = run(
        stack, "migrate", "start", "support-triage", "--to-model", "sim-literal-2025-11", "--as", "dan"
    )
    assert again.returncode == 2 and "already running: migration-support-triage" in again.stderr

    st = wait_phase(stack, "awaiting_approval")
    assert set(st) >= {
        "id",
        "deployment",
        "phase",
        "from_pair",
        "to_pair",
        "eval",
        "stage",
        "approvals",
        "history",
    }
    assert st["eval"]["gate"]["decision"] in ("pass", "inconclusive")
    assert set(st["eval"]["arms"]) == {"baseline", "prompt_only", "model_only", "joint"}

    own = run(stack, "migrate", "approve", "migration-support-triage", "--as", "carol")
    assert own.returncode == 2 and "separation of duties" in own.stderr
    stranger = run(stack, "migrate", "approve", "support-triage", "--as", "mallory")
    assert stranger.returncode == 2 and "not an approver" in stranger.stderr

    ok = run_json(
        stack, "migrate", "approve", "migration-support-triage", "--as", "alice", "--comment", "looks right"
    )
    assert ok["phase"] == "canary" and ok["approvals"] == 1
    st = wait_phase(stack, "canary")
    assert st["approvals"][0] | {"at": None} == {
        "by": "alice",
        "person": "alice",  # the registry's person the identity resolved to (approvals compare persons)
        "decision": "approve",
        "at": None,
        "channel": "cli",
        "stage": 0,
        "comment": "looks right",
    }
    assert st["stage"]["index"] == 0 and st["stage"]["percent"] == 20
    assert set(st["stage"]) >= {
        "index",
        "percent",
        "started_at",
        "min_hours",
        "max_hours",
        "samples",
        "decision",
    }

    assert (
        run(
            stack, "migrate", "abort", "migration-support-triage", "--as", "alice", "--comment", "demo over"
        ).returncode
        == 0
    )
    st = wait_phase(stack, "rolled_back")
    assert "aborted by alice: demo over" in st["outcome"]
    events = [h["event"] for h in st["history"]]
    assert "approve_refused" in events, "refused updates reach the audit trail through note_refusal"

    listed = run_json(stack, "get", "migrations")
    assert listed[0]["id"] == "migration-support-triage" and listed[0]["phase"] == "rolled_back"
    assert set(listed[0]) >= {
        "id",
        "deployment",
        "phase",
        "reason",
        "from_pair",
        "to_pair",
        "requested_by",
        "started_at",
    }
    assert run_json(stack, "migrate", "list")[0]["requested_by"] == "carol"

    report = run_json(stack, "migrate", "report", "migration-support-triage")
    assert set(report["effects"]) == {"prompt", "model", "interaction", "joint"}
    assert isinstance(report["canary_quality"], dict)  # per variant: failing online checks with examples
    assert isinstance(report["canary_stage_checks"], list) and isinstance(report["canary_judge"], list)
    html = Path(stack.home) / "r.html"
    shown = run(stack, "migrate", "report", "migration-support-triage", "--html", str(html))
    assert shown.returncode == 0 and "## Canary quality" in shown.stdout
    assert "<svg" in html.read_text()

    deps = run_json(stack, "get", "deployments")
    assert deps[0]["candidate_pair"] is None and deps[0]["canary_percent"] == 0
    ledger = run_json(stack, "ledger", "support-triage")
    assert ledger[-1]["reason"].startswith("rolled back from support-triage@2+sim-fresh-2025-09")


def test_status_of_an_unknown_migration_is_bad_input(stack: EmbeddedStack) -> None:
    proc = run(stack, "migrate", "status", "migration-nope")
    assert proc.returncode == 2 and "migration-nope" in proc.stderr


def test_no_temporal_is_a_clear_failure(tmp_path: Path) -> None:
    env = dict(os.environ, PAIRSHIFT_HOME=str(tmp_path), PAIRSHIFT_TEMPORAL_ADDRESS="127.0.0.1:9")
    proc = subprocess.run(
        [PAIRSHIFT, "migrate", "status", "x"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "cannot reach Temporal at 127.0.0.1:9" in proc.stderr
