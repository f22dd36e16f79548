"""`pairshift apply` and request rules: what a model entry may say, what a pair's params may be per
provider, what is refused (one line, nothing written), and where a model's rules come from (config first)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import dump_registry

from pairshift.providers import ModelSpec
from pairshift.registry import open_registry
from pairshift.registry.models import Model

PROMPT = {"name": "p", "version": "1", "template": "Ticket: {{ t }}", "variables": ["t"]}


def config(tmp_path: Path, *, model: dict, params: dict | None = None, name: str = "c.yaml") -> Path:
    doc = {
        "models": [model],
        "prompts": [{**PROMPT, "params": params or {}}],
        "deployments": [{"name": "d", "prompt": "p@1", "model": model["id"]}],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


REFUSED = [
    (
        "anthropic temperature above 1",
        {"id": "claude-x", "provider": "anthropic"},
        {"temperature": 1.5},
        ["deployment 'd'", "p@1 params.temperature", "Anthropic accepts 0..1, not 1.5"],
    ),
    (
        "an OpenAI parameter on Anthropic",
        {"id": "claude-x", "provider": "anthropic"},
        {"reasoning_effort": "high"},
        ["params.reasoning_effort", "OpenAI parameter"],
    ),
    (
        "thinking budget not below max_tokens",
        {"id": "claude-x", "provider": "anthropic"},
        {"thinking_budget": 2048, "max_tokens": 1024},
        ["params.thinking_budget", "below max_tokens"],
    ),
    (
        "an unknown prompt param",
        {"id": "sim-classic-2024-06", "provider": "sim"},
        {"temprature": 0},
        ["prompt 'p@1': params", "temprature", "Extra inputs"],
    ),
    (
        "temperature out of every range",
        {"id": "sim-classic-2024-06", "provider": "sim"},
        {"temperature": 3},
        ["prompt 'p@1': params", "temperature", "less than or equal to 2"],
    ),
    (
        "a key sent to a remote gateway by default",
        {"id": "gw", "provider": "openai-compatible", "base_url": "https://gateway.example.com/v1"},
        None,
        ["models.0", "api_key_env", "gateway.example.com", "OPENAI_API_KEY"],
    ),
    (
        "the Responses API on Anthropic",
        {"id": "claude-x", "provider": "anthropic", "api": "responses"},
        None,
        ["models.0", "api", "Responses API is OpenAI's"],
    ),
    (
        "a parameter name drop_params does not know",
        {"id": "gw", "provider": "openai", "drop_params": ["temperatur"]},
        None,
        ["models.0.drop_params.0", "temperatur"],
    ),
]


@pytest.mark.parametrize("what, model, params, words", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_at_apply_naming_the_field_and_nothing_is_written(
    use_registry, cli, tmp_path: Path, what: str, model: dict, params: dict | None, words: list[str]
) -> None:
    before = dump_registry(open_registry())
    result = cli("apply", "-f", str(config(tmp_path, model=model, params=params)))
    assert result.code == 2, (what, result.out, result.err)
    line = result.err.strip()
    assert "\n" not in line and "Traceback" not in line
    for word in words:
        assert word in line, (word, line)
    assert dump_registry(open_registry()) == before


def test_loopback_gateway_and_named_key_are_accepted(use_registry, cli, tmp_path: Path) -> None:
    local = {"id": "vllm", "provider": "openai-compatible", "base_url": "http://127.0.0.1:8000/v1"}
    assert cli("apply", "-f", str(config(tmp_path, model=local, name="a.yaml"))).code == 0
    remote = {
        "id": "vllm",
        "provider": "openai-compatible",
        "base_url": "https://gateway.example.com/v1",
        "api_key_env": "GATEWAY_API_KEY",
        "max_tokens_param": "max_completion_tokens",
    }
    assert cli("apply", "-f", str(config(tmp_path, model=remote, name="b.yaml"))).code == 0


def test_rules_come_from_config_over_the_calendar_family(use_registry, cli, tmp_path: Path) -> None:
    assert cli("models", "sync").code == 0  # the bundled calendar: o3-2025-04-16 among its rows
    reasoning = {"id": "o3-2025-04-16", "provider": "openai", "timeout_s": 300, "max_attempts": 2}
    first = cli(
        "apply", "-f", str(config(tmp_path, model=reasoning, params={"temperature": 0}, name="a.yaml"))
    )
    assert first.code == 0, first.err
    again = cli("apply", "-f", str(tmp_path / "a.yaml"), "--json")
    assert again.code == 0 and again.json()["changes"] == []
    with open_registry().session() as s:
        row = s.get(Model, "o3-2025-04-16")
        assert row.request_rules == {"timeout_s": 300, "max_attempts": 2}
        spec = ModelSpec.from_model(row)
    # Config said nothing of parameters: the calendar's o-series family fills them in.
    assert spec.drop_params == ("temperature", "top_p", "stop")
    assert (spec.max_tokens_param, spec.timeout_s, spec.max_attempts) == ("max_completion_tokens", 300, 2)
    everything = {**reasoning, "drop_params": []}
    changed = cli(
        "apply", "-f", str(config(tmp_path, model=everything, params={"temperature": 0}, name="b.yaml"))
    )
    assert changed.code == 0, changed.err
    with open_registry().session() as s:
        assert ModelSpec.from_model(s.get(Model, "o3-2025-04-16")).drop_params == ()  # [] sends everything
