"""The fuzzers of the trust boundary (issue 15, Build 9), shared by tests/test_fuzz.py (small budgets, in the
suite) and bench/security_bench.py (larger budgets, counts in bench/results/security.md).

- :func:`fuzz_api`: schemathesis over ``pairshift api``'s OpenAPI schema, every operation, each request sent
  without a token, with a token of the wrong scope and with an admin token. A finding: any 5xx, or an
  exception escaping the app.
- :func:`fuzz_config_apply`: hypothesis mutations of a valid config (a value replaced by a hostile one, a key
  dropped or added, the YAML text cut or an alias bomb), applied with ``pairshift apply``. A finding: an
  exit status other than 0 (applied) or 2 (refused with a one-line error), or a refusal that changed the
  registry.
- :func:`fuzz_slack`: hypothesis bodies for ``POST /slack/interactions`` (random bytes, random JSON payloads,
  mutated decision clicks), signed with the signing secret or not. A finding: a 5xx, an exception escaping the
  app, an unsigned request answered other than 401, or an unsigned request that wrote an audit row.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True)


@dataclass
class Tally:
    """What a fuzzer sent and what came back: requests (or applies), statuses, findings."""

    name: str
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    def note(self, status: Any, finding: str | None = None) -> None:
        self.sent += 1
        self.statuses[status] += 1
        if finding:
            self.findings.append(finding)

    def summary(self) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items(), key=str))
        return f"{self.name}: {self.sent} sent, {len(self.findings)} findings ({statuses})"


# ---------------------------------------------------------------- the API, by its OpenAPI schema


def fuzz_api(app: Any, headers_by_caller: dict[str, dict[str, str]], examples: int) -> dict[str, Tally]:
    """Every operation of ``app``'s schema, ``examples`` generated cases each, sent once per caller."""
    import schemathesis

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tallies = {caller: Tally(f"api ({caller})") for caller in headers_by_caller}
    for result in schema.get_all_operations():
        _fuzz_operation(result.ok(), headers_by_caller, tallies, examples)
    return tallies


def _fuzz_operation(
    operation: Any, headers_by_caller: dict, tallies: dict[str, Tally], examples: int
) -> None:
    where = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, **SETTINGS)
    def send(case: Any) -> None:
        for caller, headers in headers_by_caller.items():
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # noqa: BLE001 - the finding itself
                tallies[caller].note("exception", f"{where}: {type(exc).__name__}: {exc}"[:300])
                continue
            status = response.status_code
            bad = f"{where} answered {status}: {response.text[:200]}" if status >= 500 else None
            tallies[caller].note(status, bad)

    send()


# ---------------------------------------------------------------- config apply

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "file:///proc/self/environ",
            "file://../../etc/passwd",
            "/etc/passwd",
            "../outside.jsonl",
            "{{ range(10**9) | list }}",
            "{% for i in range(10**9) %}x{% endfor %}",
            "{{ ''.__class__.__mro__ }}",
            "SLACK_BOT_TOKEN",
            "PAIRSHIFT_DATABASE_URL",
            "anyone",
            "x" * 5000,
            "",
            "http://169.254.169.254/",
        ]
    ),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict[str, Any], path: tuple, op: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "drop":
        del parent[last]
    elif op == "add" and isinstance(parent, dict):
        parent[f"extra_{last}"] = value
    elif op == "add" and isinstance(parent, list):
        parent.append(value)
    return doc


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def fuzz_config_apply(
    folder: Path, apply: Callable[[Path], int], dump: Callable[[], str], examples: int
) -> Tally:
    """Mutations of ``folder``'s pairshift.yaml, each applied with ``apply`` (an exit status)."""
    config = folder / "pairshift.yaml"
    original = config.read_text()
    doc = yaml.safe_load(original)
    paths = _paths(doc)
    tally = Tally("config apply")

    @given(
        mutations=st.lists(
            st.tuples(st.sampled_from(paths), st.sampled_from(["replace", "drop", "add"]), HOSTILE),
            min_size=1,
            max_size=3,
        ),
        raw=st.sampled_from([None, None, None, None, "cut", "bomb", "tab"]),
        cut=st.floats(min_value=0.05, max_value=0.95),
    )
    @settings(max_examples=examples, **SETTINGS)
    def apply_one(mutations: list[tuple], raw: str | None, cut: float) -> None:
        mutated = doc
        for path, op, value in mutations:
            try:
                mutated = _mutate(mutated, path, op, value)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation removed the path
        text = yaml.safe_dump(mutated, sort_keys=False, allow_unicode=True)
        if raw == "cut":
            text = text[: int(len(text) * cut)]
        elif raw == "bomb":
            text = ALIAS_BOMB + text
        elif raw == "tab":
            text = text.replace("  ", "\t", 1)
        config.write_text(text)
        before = dump()
        try:
            code = apply(folder)
        except Exception as exc:  # noqa: BLE001 - the finding itself
            tally.note("exception", f"{type(exc).__name__}: {exc}"[:300])
            return
        finding = None
        if code not in (0, 2):
            finding = f"exit {code} for mutations {mutations!r:.200} raw={raw}"
        elif code == 2 and dump() != before:
            finding = f"refused (exit 2) but the registry changed: mutations {mutations!r:.200}"
        tally.note({0: "applied", 2: "refused"}.get(code, code), finding)

    try:
        apply_one()
    finally:
        config.write_text(original)
    return tally


# ---------------------------------------------------------------- Slack interactions

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def slack_signature(secret: str, body: bytes, ts: str) -> str:
    """Slack's v0 scheme over the raw body."""
    return "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()


def _click(migration: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U_FUZZ", "username": "fuzz"},
        "actions": [
            {"action_id": "approve", "block_id": "decision", "value": f"{migration}|0|run-1"},
        ],
        "response_url": "http://127.0.0.1:1/response",
        "container": {"channel_id": "C1", "message_ts": "1.1"},
    }


def fuzz_slack(
    post: Callable[[bytes, dict[str, str]], Any], secret: str, audit_rows: Callable[[], int], examples: int
) -> dict[str, Tally]:
    """Bodies for /slack/interactions through ``post`` (returns a response), signed and unsigned."""
    tallies = {"signed": Tally("slack (signed)"), "unsigned": Tally("slack (unsigned)")}
    click_paths = _paths(_click("m"))

    body_strategy = st.one_of(
        st.binary(max_size=300),
        JSON.map(lambda j: urlencode({"payload": json.dumps(j)}).encode()),
        st.tuples(st.sampled_from(click_paths), JSON).map(
            lambda pv: urlencode(
                {"payload": json.dumps(_mutate(_click("migration-fuzz"), pv[0], "replace", pv[1]))}
            ).encode()
        ),
        st.just(urlencode({"payload": json.dumps(_click("migration-fuzz"))}).encode()),
    )
    forged = st.sampled_from(["none", "bad", "stale", "wrong-secret"])

    @given(body=body_strategy, signed=st.booleans(), how=forged)
    @settings(max_examples=examples, **SETTINGS)
    def send(body: bytes, signed: bool, how: str) -> None:
        now = str(int(time.time()))
        if signed:
            headers = {
                "X-Slack-Request-Timestamp": now,
                "X-Slack-Signature": slack_signature(secret, body, now),
            }
        elif how == "none":
            headers = {}
        elif how == "bad":
            headers = {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": "v0=" + "0" * 64}
        elif how == "stale":
            old = str(int(time.time()) - 3600)
            headers = {
                "X-Slack-Request-Timestamp": old,
                "X-Slack-Signature": slack_signature(secret, body, old),
            }
        else:
            headers = {
                "X-Slack-Request-Timestamp": now,
                "X-Slack-Signature": slack_signature("x" + secret, body, now),
            }
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        tally = tallies["signed" if signed else "unsigned"]
        rows = audit_rows()
        try:
            response = post(body, headers)
        except Exception as exc:  # noqa: BLE001 - the finding itself
            tally.note("exception", f"{type(exc).__name__}: {exc}"[:300])
            return
        status = response.status_code
        finding = None
        if status >= 500:
            finding = f"answered {status} to {body[:100]!r}: {response.text[:200]}"
        elif not signed and status != 401:
            finding = f"unsigned ({how}) answered {status}: {body[:100]!r}"
        elif not signed and audit_rows() != rows:
            finding = f"unsigned ({how}) wrote an audit row: {body[:100]!r}"
        tally.note(status, finding)

    send()
    return tallies
