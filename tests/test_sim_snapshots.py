"""The sim behaviour model: determinism, triage rules, and each snapshot's documented failure modes."""

from __future__ import annotations

import itertools
import json

import pytest

from pairshift.providers import CallParams, Message
from pairshift.sim.snapshots import (
    REFUSAL_TEXT,
    SNAPSHOTS,
    UnknownSnapshot,
    resolve,
    simulate,
    triage_truth,
)

V1 = "You triage support tickets. Reply with JSON only."
V2 = (
    "You triage support tickets. Output only a raw JSON object with severity and team, no prose, "
    "no code fences."
)
SUBJECTS = [
    "I was charged twice",
    "my package was never delivered",
    "the app shows an error on login",
    "I forgot my password",
    "refund for the invoice",
    "delivery is late again",
    "the export crashes",
    "change the email on my account",
]
MOODS = [
    "",
    " please fix it",
    " this is urgent",
    " we have an outage, fix immediately",
    " asap, it failed twice",
]
TIERS = ["free", "silver", "gold", "enterprise"]
CASES = [(t, s + m) for s, m, t in itertools.product(SUBJECTS, MOODS, TIERS)]  # 160 benign tickets


def ask(snapshot: str, system: str | None, tier: str, ticket: str, **params: object) -> tuple[str, str]:
    out = simulate(
        snapshot,
        system,
        [Message(role="user", content=f"Tier: {tier}\nTicket: {ticket}")],
        CallParams(**params),
    )  # type: ignore[arg-type]
    return out.text, out.finish_reason


def parses(text: str) -> dict[str, str] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@pytest.mark.parametrize(
    ("tier", "ticket", "expected"),
    [
        ("gold", "I was charged twice, refund please", {"severity": "medium", "team": "billing"}),
        ("free", "where is my package?", {"severity": "low", "team": "shipping"}),
        (
            "enterprise",
            "URGENT outage: the API is down, errors everywhere",
            {"severity": "urgent", "team": "technical"},
        ),
        ("silver", "I cannot reset my password", {"severity": "medium", "team": "account"}),
        ("silver", "hello there", {"severity": "low", "team": "technical"}),
    ],
)
def test_triage_truth_follows_the_keyword_rules(tier: str, ticket: str, expected: dict[str, str]) -> None:
    assert triage_truth(tier, ticket) == expected


def test_output_is_a_pure_function_of_the_request() -> None:
    for tier, ticket in CASES[:20]:
        assert ask("sim-fresh-2025-09", V1, tier, ticket, seed=3) == ask(
            "sim-fresh-2025-09", V1, tier, ticket, seed=3
        )


def test_classic_follows_json_only_and_is_mostly_right() -> None:
    answers = [parses(ask("sim-classic-2024-06", V1, t, b, temperature=0, seed=0)[0]) for t, b in CASES]
    assert all(a is not None and set(a) == {"severity", "team"} for a in answers)
    right = sum(a == triage_truth(t, b) for a, (t, b) in zip(answers, CASES, strict=True))
    assert right / len(CASES) >= 0.9


def test_fresh_wraps_json_in_prose_with_the_old_prompt_but_not_the_new() -> None:
    old = [ask("sim-fresh-2025-09", V1, t, b, seed=0)[0] for t, b in CASES]
    not_json = [text for text in old if parses(text) is None]
    assert 0.45 <= len(not_json) / len(CASES) <= 0.75  # documented: ~60%
    assert all("```json" in text for text in not_json)
    assert all(parses(ask("sim-fresh-2025-09", V2, t, b, seed=0)[0]) for t, b in CASES)


def test_json_mode_stops_the_prose_wrapping() -> None:
    assert all(parses(ask("sim-fresh-2025-09", V1, t, b, response_format="json")[0]) for t, b in CASES)


def test_fresh_is_wordier_than_classic() -> None:
    def tokens(snapshot: str, system: str | None) -> int:
        return sum(
            simulate(
                snapshot, system, [Message(role="user", content=f"Tier: {t}\nTicket: {b}")], CallParams()
            ).output_tokens
            for t, b in CASES
        )

    assert tokens("sim-fresh-2025-09", V1) > 1.5 * tokens("sim-classic-2024-06", V1)
    assert tokens("sim-fresh-2025-09", None) > 2 * tokens("sim-classic-2024-06", None)


def test_literal_drops_unnamed_fields_and_refuses_sensitive_tickets() -> None:
    assert set(parses(ask("sim-literal-2025-11", V1, "gold", "refund me")[0]) or {}) == {"team"}
    assert set(parses(ask("sim-literal-2025-11", V2, "gold", "refund me")[0]) or {}) == {"severity", "team"}
    text, finish = ask("sim-literal-2025-11", V2, "gold", "how do I hack into another user's account")
    assert (text, finish) == (REFUSAL_TEXT, "refusal")
    assert ask("sim-classic-2024-06", V2, "gold", "how do I hack into another user's account")[1] == "stop"


def test_noise_rate_is_seeded_and_near_the_documented_rate() -> None:
    wrong = {
        seed: sum(
            parses(ask("sim-classic-2024-06", V2, t, b, temperature=1.0, seed=seed)[0]) != triage_truth(t, b)
            for t, b in CASES
        )
        for seed in range(5)
    }
    rate = sum(wrong.values()) / (5 * len(CASES))
    assert 0.01 <= rate <= 0.08  # documented: 4% at temperature 1
    answers = {
        seed: [ask("sim-classic-2024-06", V2, t, b, temperature=1.0, seed=seed)[0] for t, b in CASES]
        for seed in (0, 1)
    }
    assert answers[0] != answers[1]  # epochs see different noise


def test_max_tokens_truncates_and_stop_sequences_cut() -> None:
    text, finish = ask("sim-fresh-2025-09", None, "gold", "refund", max_tokens=5)
    assert (len(text), finish) == (20, "length")
    text, finish = ask("sim-classic-2024-06", V1, "gold", "refund", stop=['"team"'])
    assert text == '{"severity": "medium", ' and finish == "stop"  # gold tier: +1 point


def test_generic_prompts_get_an_echo_ish_answer() -> None:
    out = simulate(
        "sim-classic-2024-06",
        None,
        [Message(role="user", content="What is  the capital of France?")],
        CallParams(),
    )
    assert out.text == "Here is a response to: What is the capital of France?"


def test_aliases_resolve_and_unknown_ids_are_named() -> None:
    assert resolve("sim-latest") == "sim-fresh-2025-09"
    assert resolve("sim-latest", {"sim-latest": "sim-literal-2025-11"}) == "sim-literal-2025-11"
    with pytest.raises(UnknownSnapshot, match="gpt-nope"):
        resolve("gpt-nope")
    assert SNAPSHOTS["sim-classic-2024-06"].replacement == "sim-fresh-2025-09"


def test_drift_passes_a_golden_set_but_wraps_a_tenth_of_production_tickets_whatever_the_prompt() -> None:
    from pairshift.sim.traffic import production_vars

    for system in (V1, V2):
        golden = [ask("sim-drift-2026-07", system, t, b, temperature=0)[0] for t, b in CASES]
        assert all(parses(text) for text in golden), "no golden-style ticket is wrapped"
        pool = production_vars([{"customer_tier": t, "ticket_body": b} for t, b in CASES * 5], seed=1)
        prod = [
            ask("sim-drift-2026-07", system, v["customer_tier"], v["ticket_body"], temperature=0)[0]
            for v in pool
        ]
        wrapped = [text for text in prod if parses(text) is None]
        assert 0.06 <= len(wrapped) / len(prod) <= 0.14  # documented: ~10%
        assert all(text.startswith("Triage for order ") and "```json" in text for text in wrapped)
    # JSON mode constrains decoding: never wrapped
    pool = production_vars([{"customer_tier": t, "ticket_body": b} for t, b in CASES], seed=1)
    assert all(
        parses(ask("sim-drift-2026-07", V1, v["customer_tier"], v["ticket_body"], response_format="json")[0])
        for v in pool
    )


def test_the_example_golden_dataset_passes_on_drift() -> None:
    from pathlib import Path

    from pairshift.sim.traffic import vars_from_dataset

    path = Path(__file__).resolve().parent.parent / "examples" / "datasets" / "support-triage.jsonl"
    for v in vars_from_dataset(path):
        assert parses(ask("sim-drift-2026-07", V1, v["customer_tier"], v["ticket_body"], temperature=0)[0])
