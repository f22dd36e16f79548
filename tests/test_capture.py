"""`pairshift datasets capture`: sampled control calls become a dataset version an eval runs on, redacted
before anything is stored (a planted secret never reaches the registry's file)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES
from sqlalchemy import select
from test_router_support import DEPLOYMENT, set_split

from pairshift import evals
from pairshift.apply import apply_path
from pairshift.capture import DEFAULT_PATTERNS, REDACTED, CaptureError, finish_capture, redact, start_capture
from pairshift.registry.models import Capture, CapturedCase, DatasetCase, EvalResult
from pairshift.router import Router

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c"
ACCOUNT = "ACCT-123456"
EMAIL = "alice.doe@example.com"


def test_redact_replaces_every_match_in_every_string():
    patterns = [re.compile(p) for p in (*DEFAULT_PATTERNS, r"ACCT-\d{6}")]
    value = {
        "vars": {"ticket": f"key {SECRET}, mail {EMAIL}, account {ACCOUNT}", "n": 3},
        "messages": [{"role": "user", "content": f"Authorization: Bearer {'x' * 20}"}],
    }
    out = redact(value, patterns)
    text = repr(out)
    assert SECRET not in text and EMAIL not in text and ACCOUNT not in text and "x" * 20 not in text
    assert out["vars"]["n"] == 3 and out["vars"]["ticket"].count(REDACTED) == 3


@pytest.fixture
def registry(sqlite_registry, tmp_path: Path):
    dst = tmp_path / "config"
    shutil.copytree(EXAMPLES, dst, ignore=shutil.ignore_patterns("*.py"))
    cfg = yaml.safe_load((dst / "pairshift.yaml").read_text())
    cfg["deployments"][0]["redact"] = [r"ACCT-\d{6}"]
    (dst / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    apply_path(sqlite_registry, dst, by="test")
    return sqlite_registry


def _traffic(registry, n: int) -> None:
    async def send(router: Router) -> None:
        for i in range(n):
            body = f"I was charged twice, refund please. Key {SECRET}, reach me at {EMAIL}, account {ACCOUNT}"
            await router.complete(f"user-{i}", {"customer_tier": "gold", "ticket_body": body})

    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        asyncio.run(send(router))


def test_a_capture_becomes_a_redacted_dataset_version_an_eval_runs_on(registry, sqlite_url):
    set_split(registry, 50)  # only the control's calls are captured: their output is the reference
    with registry.session() as s:
        capture_id = start_capture(s, DEPLOYMENT, rate=1.0, max_cases=5, by="test").id
    _traffic(registry, 20)
    with registry.session() as s:
        samples = list(s.scalars(select(CapturedCase)))
        assert 5 <= len(samples) < 20  # about half the units are control
        version = finish_capture(s, capture_id)
        version_id, n_cases = version.id, version.n_cases
        assert s.get(Capture, capture_id).status == "done"
        cases = [
            c.data for c in s.scalars(select(DatasetCase).where(DatasetCase.dataset_version == version_id))
        ]
    assert n_cases == 5 and version_id.startswith(f"{DEPLOYMENT}-captured@")
    ticket = cases[0]["vars"]["ticket_body"]
    assert ticket.count(REDACTED) == 3 and "refund please" in ticket
    assert '"team"' in cases[0]["expected"] and {a["type"] for a in cases[0]["assert"]} >= {"similar"}
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for secret in (SECRET, EMAIL, ACCOUNT):
        assert secret.encode() not in stored, f"{secret} reached the registry"

    # the model-only eval of a candidate on the captured dataset
    request = evals.EvalRequest(
        deployment=DEPLOYMENT,
        to_model="sim-fresh-2025-09",
        dataset=f"{DEPLOYMENT}-captured",
        requested_by="t",
    )
    plan = evals.plan_eval(registry, request, "captured")
    assert [a.arm for a in plan.arms] == ["baseline", "model_only"]
    result = asyncio.run(
        evals.run_batch(registry, evals.BatchSpec(run_id=plan.arms[1].run_id, start=0, stop=5))
    )
    assert result.calls == 5 * plan.epochs
    with registry.session() as s:
        rows = list(s.scalars(select(EvalResult).where(EvalResult.run_id == plan.arms[1].run_id)))
    assert len(rows) == 5 * plan.epochs
    verdicts = {(a["type"], a["passed"]) for r in rows for a in r.assertions}
    # sim-fresh answers prompt v1 with the JSON in a code fence: the control's recorded output catches it
    assert verdicts == {("similar", True), ("is-json", False)}


def test_a_second_capture_or_a_bad_rate_is_refused(registry):
    with registry.session() as s:
        with pytest.raises(CaptureError, match="in \\(0, 1\\]"):
            start_capture(s, DEPLOYMENT, rate=1.5, max_cases=5, by="t")
        with pytest.raises(CaptureError, match="unknown deployment"):
            start_capture(s, "nope", rate=0.5, max_cases=5, by="t")
        start_capture(s, DEPLOYMENT, rate=0.5, max_cases=5, by="t")
    with registry.session() as s:
        with pytest.raises(CaptureError, match="already being captured"):
            start_capture(s, DEPLOYMENT, rate=0.5, max_cases=5, by="t")


def test_cli_without_traffic_exits_1_and_bad_input_2(use_registry, cli):
    assert cli("apply", "-f", str(EXAMPLES)).code == 0
    bad = cli("datasets", "capture", DEPLOYMENT, "--sample", "0", "--max", "3")
    assert bad.code == 2 and "(0, 1]" in bad.err
    empty = cli("datasets", "capture", DEPLOYMENT, "--sample", "1", "--max", "3", "--timeout-s", "0")
    assert empty.code == 1 and "no request" in empty.err
