"""Issue 24, items 5, 6 and 7: the limiter after a 429, promptfoo vars and case ids, refused observations.

- After a 429, every reservation moves past the retry-after (old: the waiters whose reservations fell inside
  the block all went out at the instant it ended, up to ``concurrency`` at once).
- promptfoo ``file://`` vars are loaded, confined to the config's folder (old: the prompt rendered the path);
  an unnamed test's id is a hash of its content (old: its position, so inserting a test renumbered the rest).
- A refused observation batch with more than 20 bad items keeps its good items (old: all were discarded).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml
from test_evals_support import eval_registry  # noqa: F401 - fixture

from pairshift.datasets import DatasetError
from pairshift.datasets.promptfoo import load_promptfoo
from pairshift.observations import ObservationIn, ObservationWriter
from pairshift.ratelimit import Limiter, Limits
from pairshift.registry.models import Deployment
from pairshift.registry.store import Registry

# ---------------------------------------------------------------- item 5


async def test_after_a_429_the_waiters_resume_at_the_rate() -> None:
    rate, block = 20.0, 0.3  # 1,200 requests/min; a 429 with retry-after 0.3 s
    limiter = Limiter(Limits(requests_per_minute=rate * 60))
    sent: list[float] = []

    async def call() -> None:
        async with limiter.slot():
            sent.append(time.monotonic())

    tasks = [asyncio.create_task(call()) for _ in range(6)]
    await asyncio.sleep(0)  # every task has reserved (0.05 s apart) and sleeps on it
    start = time.monotonic()
    limiter.penalize(block)
    await asyncio.gather(*tasks)
    for k, at in enumerate(sorted(sent)):
        # a sleep never ends early: the k-th call cannot go before the block plus k + 1 rate intervals
        assert at - start >= block + (k + 1) / rate - 0.002, (k, at - start)


# ---------------------------------------------------------------- item 6


def _config(folder: Path, tests: list[dict], **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    path = folder / "promptfooconfig.yaml"
    path.write_text(yaml.safe_dump({"prompts": ["{{ body }}"], "tests": tests}))
    return path


def test_file_vars_are_loaded_from_the_config_folder(tmp_path: Path) -> None:
    path = _config(
        tmp_path / "pf",
        [
            {
                "vars": {"body": "file://ticket.txt", "meta": "file://meta.json"},
                "assert": [{"type": "is-json"}],
            }
        ],
        **{"ticket.txt": "My card was charged twice.", "meta.json": '{"tier": "gold"}'},
    )
    (case,) = load_promptfoo(path)
    assert case.vars == {"body": "My card was charged twice.", "meta": {"tier": "gold"}}


@pytest.mark.parametrize("ref", ["file://../outside.txt", "file://missing.txt", "file://run.py"])
def test_a_file_var_outside_the_folder_or_missing_or_a_script_is_refused(tmp_path: Path, ref: str) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    path = _config(tmp_path / "pf", [{"vars": {"body": ref}}], **{"run.py": "print(1)"})
    with pytest.raises(DatasetError, match="vars.body"):
        load_promptfoo(path)


def test_unnamed_tests_keep_their_ids_when_a_test_is_inserted(tmp_path: Path) -> None:
    a = {"vars": {"body": "a"}, "assert": [{"type": "contains", "value": "x"}]}
    b = {"vars": {"body": "b"}, "assert": [{"type": "contains", "value": "y"}]}
    new = {"vars": {"body": "new"}, "assert": [{"type": "contains", "value": "z"}]}
    before = [c.id for c in load_promptfoo(_config(tmp_path / "v1", [a, b]))]
    after = [c.id for c in load_promptfoo(_config(tmp_path / "v2", [new, a, b]))]
    assert after[1:] == before and after[0] not in before
    twins = [c.id for c in load_promptfoo(_config(tmp_path / "v3", [a, a]))]
    assert twins[0] == before[0] and twins[1] == f"{before[0]}-2"


# ---------------------------------------------------------------- item 7


def test_many_bad_observations_do_not_take_the_good_ones_with_them(eval_registry: Registry) -> None:  # noqa: F811
    with eval_registry.session() as s:
        pair = s.get(Deployment, "support-triage").active_pair

    def obs(pair: str, unit: str) -> ObservationIn:
        return ObservationIn(
            deployment="support-triage",
            pair=pair,
            variant="control",
            unit=unit,
            latency_ms=1.0,
            input_tokens=1,
            output_tokens=1,
            cost_usd=0.0,
            outcome="ok",
        )

    writer = ObservationWriter(eval_registry)
    for i in range(30):
        writer.put(obs("nope@1+nobody", f"bad-{i}"))
    for i in range(10):
        writer.put(obs(pair, f"good-{i}"))
    writer.flush()
    assert (writer.written, writer.rejected) == (10, 30)


def test_health_shows_the_observations_the_api_writer_lost(eval_registry: Registry) -> None:  # noqa: F811
    """Old /healthz: only liveness; a writer's drops and refusals were counted where no operator looked."""
    from fastapi.testclient import TestClient

    from pairshift.api import create_app

    app = create_app(eval_registry)
    with TestClient(app) as c:
        state = app.state.pairshift
        state.router("support-triage")  # the API's shared writer exists once a router does
        writer = state._writer
        writer.put(
            ObservationIn(
                deployment="support-triage",
                pair="nope@1+nobody",
                variant="control",
                unit="u",
                latency_ms=1.0,
                input_tokens=1,
                output_tokens=1,
                cost_usd=0.0,
                outcome="ok",
            )
        )
        writer.flush()
        losses = c.get("/healthz").json()["observations"]
    assert (losses["rejected"], losses["written"]) == (1, 0)
