"""The provider calendar: bundled file, LiteLLM format, sync (config wins, idempotent), refusals that keep the
previous calendar, and `pairshift models sync|list` (SQLite always, PostgreSQL when it answers)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml
from conftest import dump_registry
from sqlmodel import select

from pairshift.provider_calendar import (
    CalendarError,
    family_rules,
    load_calendar,
    load_families,
    replacement_problems,
    sync,
)
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, Model, PromptVersion
from pairshift.registry.store import Registry

DATA = Path(__file__).parent / "data" / "calendar"


@pytest.fixture
def calendar_cli(cli):
    """The in-process CLI (models / deprecations / schedules groups)."""
    return cli


def test_bundled_calendar_holds_the_published_retirements() -> None:
    entries = {e.id: e for e in load_calendar()}
    sonnet = entries["claude-sonnet-4-20250514"]
    assert (sonnet.deprecated_on, sonnet.retires_on, sonnet.replacement) == (
        date(2026, 4, 14),
        date(2026, 6, 15),
        "claude-sonnet-4-6",
    )
    assert entries["claude-opus-4-20250514"].replacement == "claude-opus-4-8"
    assert entries["claude-3-7-sonnet-20250219"].retires_on == date(2026, 2, 19)
    assert entries["o3-2025-04-16"].retires_on == entries["gpt-5-2025-08-07"].retires_on == date(2026, 12, 11)
    assert {e.provider for e in entries.values()} == {"anthropic", "openai"}
    assert all(e.source.startswith("https://") and e.read_on for e in entries.values())
    assert all(e.price is not None and e.price.input_per_mtok > 0 for e in entries.values())


def test_litellm_format_gives_prices_per_mtok_and_retirement_dates() -> None:
    entries = {e.id: e for e in load_calendar(DATA / "litellm.json", today=date(2026, 11, 2))}
    assert set(entries) == {"claude-sonnet-4-20250514", "gpt-4o-2024-08-06"}  # no embeddings, no bedrock
    gpt = entries["gpt-4o-2024-08-06"]
    assert (gpt.provider, gpt.retires_on, gpt.read_on) == ("openai", date(2027, 1, 14), date(2026, 11, 2))
    assert (gpt.price.input_per_mtok, gpt.price.output_per_mtok) == (2.5, 10.0)
    # LiteLLM's cached and batch prices come along (cache_read_input_token_cost, *_cost_per_token_batches).
    assert (
        gpt.price.cached_input_per_mtok,
        gpt.price.batch_input_per_mtok,
        gpt.price.batch_output_per_mtok,
    ) == (
        1.25,
        1.25,
        5.0,
    )
    assert gpt.row_values().keys() == {
        "provider",
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "batch_input_per_mtok",
        "batch_output_per_mtok",
        "retires_on",
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("malformed.yaml", "models[1] (claude-opus-4-20250514): retires_on: Input should be a valid date"),
        ("litellm_bad.json", "gpt-4o-2024-08-06: deprecation_date: Input should be a valid date"),
        ("duplicate.yaml", "gpt-5-2025-12-01: gpt-5 is already listed by gpt-5-2025-08-07"),
    ],
)
def test_malformed_files_are_refused_naming_entry_and_field(name: str, message: str) -> None:
    with pytest.raises(CalendarError) as info:
        load_calendar(DATA / name)
    text = str(info.value)
    assert message in text and str(DATA / name) in text and "\n" not in text


def test_sync_writes_calendar_rows_once_and_never_touches_config(registry: Registry) -> None:
    with registry.session() as s:
        s.add(
            Model(
                id="claude-sonnet-4-6",
                provider="anthropic",
                input_per_mtok=9.0,
                output_per_mtok=9.0,
                source="config",
            )
        )
    entries = load_calendar(DATA / "small.yaml")
    with registry.session() as s:
        first = sync(s, entries)
    assert first.created == ["claude-sonnet-4-20250514", "gpt-5-2025-08-07"]
    assert first.kept_config == ["claude-sonnet-4-6"]
    before = dump_registry(registry)
    with registry.session() as s:
        again = sync(s, entries)
    assert (again.created, again.updated, again.unchanged) == ([], [], 2)
    assert dump_registry(registry) == before
    with registry.session() as s:
        config_row = s.get(Model, "claude-sonnet-4-6")
        assert (config_row.source, config_row.input_per_mtok) == ("config", 9.0)
        row = s.get(Model, "claude-sonnet-4-20250514")
        assert (row.source, row.retires_on, row.aliases) == (
            "calendar",
            date(2026, 6, 15),
            ["claude-sonnet-4-0"],
        )


def test_litellm_refresh_updates_dates_and_keeps_what_it_does_not_carry(registry: Registry) -> None:
    with registry.session() as s:
        sync(s, load_calendar(DATA / "small.yaml"))
    litellm = [
        e.model_copy(update={"retires_on": date(2026, 7, 1)}) if e.id.startswith("claude") else e
        for e in load_calendar(DATA / "litellm.json")
    ]
    with registry.session() as s:
        result = sync(s, litellm)
    assert result.updated == ["claude-sonnet-4-20250514"] and result.created == ["gpt-4o-2024-08-06"]
    with registry.session() as s:
        row = s.get(Model, "claude-sonnet-4-20250514")
        # LiteLLM has no replacement, aliases or announcement date: the calendar's stay.
        assert (row.retires_on, row.replacement, row.aliases, row.deprecated_on) == (
            date(2026, 7, 1),
            "claude-sonnet-4-6",
            ["claude-sonnet-4-0"],
            date(2026, 4, 14),
        )


def test_cli_refuses_a_malformed_file_and_keeps_the_previous_calendar(
    use_registry: str, calendar_cli
) -> None:
    cli = calendar_cli
    assert cli("models", "sync", "--from", str(DATA / "small.yaml")).code == 0
    before = dump_registry(open_registry(use_registry))
    result = cli("models", "sync", "--from", str(DATA / "malformed.yaml"), "--json")
    assert result.code == 2 and result.out == ""
    assert "models[1] (claude-opus-4-20250514): retires_on" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert dump_registry(open_registry(use_registry)) == before


def test_cli_sync_bundled_then_list_shows_retirement_pins_and_aliases(
    use_registry: str, calendar_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pairshift.cli.common import console

    monkeypatch.setattr(console, "width", 250)  # the table, unabbreviated
    cli = calendar_cli
    out = cli("models", "sync", "--json")
    assert out.code == 0 and out.json()["entries"] == len(out.json()["created"]) > 20
    with open_registry(use_registry).session() as s:
        s.add(PromptVersion(id="p@1", name="p", version="1", template="x", content_hash="h"))
        s.add(Deployment(name="pinned", active_prompt="p@1", active_model="claude-sonnet-4-20250514"))
        s.add(Deployment(name="unpinned", active_prompt="p@1", active_model="gpt-5"))
    rows = {r["id"]: r for r in cli("models", "list", "--today", "2026-11-22", "--json").json()}
    sonnet, gpt5 = rows["claude-sonnet-4-20250514"], rows["gpt-5-2025-08-07"]
    assert (sonnet["retired"], sonnet["days_to_retirement"], sonnet["pinned"]) == (True, -160, ["pinned"])
    assert (gpt5["retired"], gpt5["days_to_retirement"], gpt5["pinned"]) == (False, 19, [])
    assert gpt5["via_alias"] == [{"deployment": "unpinned", "alias": "gpt-5"}]
    table = cli("models", "list", "--today", "2026-11-22")
    assert table.code == 0 and "RETIRED pinned" in table.out and "unpinned (gpt-5, unpinned)" in table.out
    with open_registry(use_registry).session() as s:
        assert all(m.source == "calendar" for m in s.exec(select(Model)).all())


PROVIDER_PAGES = (
    "https://platform.claude.com/",
    "https://docs.anthropic.com/",
    "https://developers.openai.com/",
)


def test_every_bundled_row_cites_the_provider_s_own_page_and_a_read_date() -> None:
    for entry in load_calendar():
        assert entry.source.startswith(PROVIDER_PAGES), (entry.id, entry.source)
        assert entry.read_on <= date(2026, 11, 30), entry.id
        # Read elsewhere than the provider's page: the row says where, and what is verified.
        assert entry.read_from is None or entry.note, entry.id


def test_no_bundled_replacement_retires_before_or_within_90_days_after_what_it_replaces() -> None:
    assert replacement_problems(load_calendar()) == []


def test_the_replacement_rule_catches_what_it_is_for(tmp_path: Path) -> None:
    page = {"source": "https://developers.openai.com/x", "read_on": "2026-11-30", "provider": "openai"}
    rows = [
        {"id": "a", "retires_on": "2026-10-23", "replacement": "b", **page},
        {"id": "b", "retires_on": "2027-01-14", **page},  # 83 days after a
        {"id": "c", "retires_on": "2026-01-01", "replacement": "nowhere", **page},
        {"id": "d", "retires_on": "2026-01-01", "replacement": "e", **page},
        {"id": "e", "retires_on": "2026-04-02", **page},  # 91 days after d: fine
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": rows}))
    problems = replacement_problems(load_calendar(bad))
    assert problems == [
        "a (retires 2026-10-23): its replacement b retires 2027-01-14, less than 90 days after",
        "c: replacement nowhere is not in the calendar",
    ]


def test_bundled_families_carry_request_rules_with_their_sources() -> None:
    families = {f.name: f for f in load_families()}
    assert families and all(f.source.startswith("https://") and f.read_on for f in families.values())
    assert family_rules("o3-2025-04-16", "openai").drop_params == ["temperature", "top_p", "stop"]
    assert (
        family_rules("gpt-5-mini-2025-08-07", "openai-compatible").max_tokens_param == "max_completion_tokens"
    )
    assert family_rules("gpt-5-chat-latest", "openai").drop_params is None
    assert family_rules("claude-opus-4-8", "anthropic").drop_params == ["temperature", "top_p"]
    assert family_rules("claude-sonnet-4-6", "anthropic").drop_params is None


def test_models_list_warns_when_the_calendar_s_newest_read_date_is_over_90_days_old(
    use_registry: str, calendar_cli
) -> None:
    cli = calendar_cli
    fresh = cli("models", "list", "--today", "2026-11-30")
    assert fresh.code == 0 and "warning" not in fresh.err
    at_90 = cli("models", "list", "--today", "2027-02-28")  # 90 days after 2026-11-30
    assert "warning" not in at_90.err
    stale = cli("models", "list", "--today", "2027-03-01", "--json")
    assert stale.code == 0 and isinstance(stale.json(), list)  # the warning goes to stderr, JSON stays clean
    assert "warning: the bundled provider calendar was last read on 2026-11-30 (91 days ago)" in stale.err
