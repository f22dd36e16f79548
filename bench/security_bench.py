"""The trust boundary's fuzzers on larger budgets than the suite's (``make bench``): counts of what was sent
and what came back, and every finding (bench/results/security.md).

The fuzzers are tests/fuzz_support.py's, run as tests/test_fuzz.py runs them: schemathesis over every route of
``pairshift api``'s OpenAPI schema (without a token, with a token of the wrong scope, with an admin token),
hypothesis mutations of a valid config applied with ``pairshift apply``, and ``/slack/interactions`` bodies
signed and unsigned. Generation is derandomized, so a run repeats.

Run: ``python bench/security_bench.py [--api 100] [--config 300] [--slack 1000]
[--out bench/results/security.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ["PAIRSHIFT_HOME"] = tempfile.mkdtemp(prefix="pairshift-security-bench-")
os.environ.pop("PAIRSHIFT_DATABASE_URL", None)

from conftest import api_token, bearer, dump_registry  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from fuzz_support import Tally, fuzz_api, fuzz_config_apply, fuzz_slack  # noqa: E402
from migration_harness import small_examples  # noqa: E402
from test_fuzz import SECRET, api_app, audit_rows  # noqa: E402
from test_router_support import apply_example  # noqa: E402

from pairshift.cli import run  # noqa: E402
from pairshift.registry import open_registry  # noqa: E402


def quiet_apply(folder: Path) -> int:
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return run(["apply", "-f", str(folder)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", type=int, default=100, help="generated cases per API operation")
    parser.add_argument("--config", type=int, default=300, help="mutated configs applied")
    parser.add_argument("--slack", type=int, default=1000, help="Slack bodies sent")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "security.md")
    args = parser.parse_args()
    rows: list[tuple[Tally, float]] = []

    work = Path(tempfile.mkdtemp(prefix="pairshift-security-"))
    registry = open_registry(f"sqlite:///{work / 'api.db'}")
    apply_example(registry)
    app = api_app(registry)
    with TestClient(app, raise_server_exceptions=True) as client:
        callers = {
            "no token": {},
            "wrong scope": bearer(api_token(registry, "resolve")),
            "admin": bearer(api_token(registry, "admin")),
        }
        began = time.monotonic()
        api = fuzz_api(app, callers, examples=args.api)
        took = time.monotonic() - began
        rows += [(t, took / len(api)) for t in api.values()]
        began = time.monotonic()
        slack = fuzz_slack(
            lambda body, headers: client.post("/slack/interactions", content=body, headers=headers),
            SECRET,
            audit_rows=lambda: audit_rows(registry),
            examples=args.slack,
        )
        took = time.monotonic() - began
        rows += [(t, took / len(slack)) for t in slack.values()]

    folder = small_examples(work / "config", cases=5)
    assert quiet_apply(folder) == 0, "the valid config must apply"
    began = time.monotonic()
    config = fuzz_config_apply(folder, quiet_apply, lambda: dump_registry(open_registry()), args.config)
    rows.append((config, time.monotonic() - began))

    findings = sum(len(t.findings) for t, _ in rows)
    lines = [
        "# Security fuzzing (bench/security_bench.py)",
        "",
        f"`python bench/security_bench.py --api {args.api} --config {args.config} --slack {args.slack}` on "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}; derandomized "
        "generation (a rerun repeats). A finding: a 5xx or an exception out of the app; for config apply "
        "an exit other than 0/2 (a traceback) or a refusal that changed the registry dump; for Slack an "
        "unsigned request answered other than 401 or one that wrote an audit row.",
        "",
        "| fuzzer | sent | findings | 5xx | statuses | seconds |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for tally, seconds in rows:
        fivexx = sum(v for k, v in tally.statuses.items() if isinstance(k, int) and k >= 500)
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items(), key=str))
        found = len(tally.findings)
        lines.append(f"| {tally.name} | {tally.sent} | {found} | {fivexx} | {statuses} | {seconds:.1f} |")
    lines += ["", f"**{findings} findings in total.**", ""]
    for tally, _ in rows:
        for finding in tally.findings[:20]:
            lines.append(f"- {tally.name}: {finding}")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
