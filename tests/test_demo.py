"""`pairshift demo` end to end as a user runs it (real processes, no terminal): each scenario ends as its
story says, prints the report path, reads the report over the API with a `read` token, and leaves nothing
running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # the demo: the whole embedded stack as processes

PAIRSHIFT = str(Path(sys.executable).parent / "pairshift")
# The demo reads its report from `pairshift api` as production clients do: with a bearer token, not without.
TOKEN_READ = "the API serves it to a `read` token (HTTP 200; without a token: HTTP 401)"


@pytest.mark.parametrize(
    "scenario, words",
    [
        ("happy", ["migration-support-triage: promoted", "interaction", "HTML report:", TOKEN_READ]),
        ("regression", ["migration-support-triage: rolled_back", "gate breach", "HTML report:", TOKEN_READ]),
        (
            "deprecation",
            ["the scan started migration-support-triage", "failed_eval", "--to-prompt support-triage@2"],
        ),
    ],
)
def test_demo_scenario(tmp_path: Path, scenario: str, words: list[str]) -> None:
    env = dict(os.environ, PAIRSHIFT_HOME=str(tmp_path / "home"))
    env.pop("PAIRSHIFT_DATABASE_URL", None)
    proc = subprocess.run(
        [PAIRSHIFT, "demo", "--scenario", scenario],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for w in words:
        assert w in out, (w, out[-3000:])
    assert "stopped the embedded stack" in out
    report = tmp_path / "home" / "demo" / "report.html"
    assert report.exists() and "<svg" in report.read_text()
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left running: {leftovers.stdout}"
