"""Deterministic sim "model snapshots": offline stand-ins whose behaviour differs the way real ones do.

:func:`simulate` is a pure function of (snapshot, system text, messages, params): no network, no
clock, no global random state (every "random" choice is a SHA-256 of its inputs). The same request
gives the same output in-process (``sim_provider``) and through the fake server (``sim.server``).

The demo domain is support-ticket triage: a last user message carrying ``Tier: <tier>`` and
``Ticket: <text>``; the right answer is ``{"severity": ..., "team": ...}`` as :func:`triage_truth`
computes it from keywords. Each snapshot then departs from that answer in its own documented way
(prose around JSON, literal instruction following, refusals, seeded noise, longer outputs).
``pairshift/sim/README.md`` tables what each snapshot does so a reader can predict the demo.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from pairshift.providers.base import CallParams, Message

CHARS_PER_TOKEN = 4
SEVERITIES = ("low", "medium", "high", "urgent")
TEAMS = ("billing", "technical", "shipping", "account")  # also the tie-break order
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


class SnapshotInfo(BaseModel):
    """One sim snapshot: its calendar facts and the knobs of its behaviour."""

    model_config = ConfigDict(frozen=True)

    id: str
    description: str
    released: date
    retires_on: date | None = None
    replacement: str | None = None
    noise_rate: float = Field(description="chance of one wrong triage field at temperature 1 (half at 0)")
    prose_wrap_rate: float = Field(
        default=0.0, description="share of cases wrapped in prose when JSON is asked without 'no prose'"
    )
    production_wrap_rate: float = Field(
        default=0.0,
        description="share of production tickets (those quoting an order or reference number, which curated "
        "golden sets do not) wrapped in prose whatever the prompt says (JSON mode excepted)",
    )
    literal_fields: bool = Field(default=False, description="emit only the fields the prompt names")
    refuses_sensitive: bool = Field(default=False, description="refuse tickets with sensitive words")
    refusal_rate: float = Field(default=0.0, description="seeded refusals of any request")
    plain_template: str = Field(description="triage answer when no JSON is asked")
    generic_template: str = Field(description="answer to a non-triage prompt; {topic} is the request")
    base_latency_ms: float
    ms_per_output_token: float
    input_per_mtok: float = Field(description="suggested list price for configs and the demo")
    output_per_mtok: float
    reasoning_tokens: dict[str, int] | None = Field(
        default=None,
        description="a reasoning snapshot: tokens it thinks per reasoning_effort ('' = not given) before "
        "any text, out of the same max_tokens",
    )


SNAPSHOTS: dict[str, SnapshotInfo] = {
    s.id: s
    for s in (
        SnapshotInfo(
            id="sim-classic-2024-06",
            description="the old snapshot about to retire: follows 'Reply with JSON only' well",
            released=date(2024, 6, 20),
            retires_on=date(2027, 1, 15),
            replacement="sim-fresh-2025-09",
            noise_rate=0.04,
            plain_template="Severity: {severity}. Team: {team}.",
            generic_template="Here is a response to: {topic}",
            base_latency_ms=600.0,
            ms_per_output_token=20.0,
            input_per_mtok=3.0,
            output_per_mtok=15.0,
        ),
        SnapshotInfo(
            id="sim-fresh-2025-09",
            description="the replacement: wraps JSON in prose unless told 'no prose'; wordier",
            released=date(2025, 9, 15),
            noise_rate=0.06,
            prose_wrap_rate=0.6,
            plain_template=(
                "Thanks for sharing this ticket! After reviewing it, I'd rate the severity as "
                "{severity} and route it to the {team} team. Let me know if you need anything else."
            ),
            generic_template=(
                "Great question! Here is a detailed response to: {topic}\n\nTo summarise, I have "
                "addressed the request above. Let me know if you would like more detail."
            ),
            base_latency_ms=450.0,
            ms_per_output_token=12.0,
            input_per_mtok=3.0,
            output_per_mtok=15.0,
        ),
        SnapshotInfo(
            id="sim-drift-2026-07",
            description="passes a curated golden set (clean JSON, like classic) but wraps ~10% of production "
            "tickets, those quoting an order or reference number, in prose whatever the prompt says",
            released=date(2026, 7, 1),
            noise_rate=0.04,
            production_wrap_rate=0.1,
            plain_template="Severity: {severity}. Team: {team}.",
            generic_template="Here is a response to: {topic}",
            base_latency_ms=550.0,
            ms_per_output_token=18.0,
            input_per_mtok=3.0,
            output_per_mtok=15.0,
        ),
        SnapshotInfo(
            id="sim-literal-2025-11",
            description="follows instructions literally (drops unnamed fields) and refuses some tickets",
            released=date(2025, 11, 20),
            noise_rate=0.03,
            literal_fields=True,
            refuses_sensitive=True,
            refusal_rate=0.02,
            plain_template="severity={severity} team={team}",
            generic_template="Response: {topic}",
            base_latency_ms=400.0,
            ms_per_output_token=10.0,
            input_per_mtok=1.0,
            output_per_mtok=5.0,
        ),
        SnapshotInfo(
            id="sim-reason-2026-03",
            description="a reasoning snapshot: refuses temperature other than 1, stop and max_tokens (as "
            "OpenAI's o-series do); thinks before it answers, out of the same token limit",
            released=date(2026, 3, 10),
            noise_rate=0.02,
            plain_template="Severity: {severity}. Team: {team}.",
            generic_template="Answer: {topic}",
            base_latency_ms=1500.0,
            ms_per_output_token=8.0,
            input_per_mtok=2.0,
            output_per_mtok=8.0,
            reasoning_tokens={
                "": 192,
                "none": 0,
                "minimal": 16,
                "low": 64,
                "medium": 192,
                "high": 768,
                "xhigh": 1536,
            },
        ),
        SnapshotInfo(
            id="sim-strict-2026-05",
            description="an Anthropic-style snapshot without sampling parameters: refuses temperature, top_p "
            "and top_k (as Claude Opus 4.7 and later do)",
            released=date(2026, 5, 20),
            noise_rate=0.03,
            plain_template="Severity: {severity}. Team: {team}.",
            generic_template="Response: {topic}",
            base_latency_ms=700.0,
            ms_per_output_token=15.0,
            input_per_mtok=5.0,
            output_per_mtok=25.0,
        ),
    )
}
ALIASES: dict[str, str] = {"sim-latest": "sim-fresh-2025-09"}


class UnknownSnapshot(KeyError):
    """A model id that is neither a sim snapshot nor a sim alias."""

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.model_id = model_id

    def __str__(self) -> str:
        known = ", ".join(sorted([*SNAPSHOTS, *ALIASES]))
        return f"unknown sim model {self.model_id!r} (known: {known})"


class SimOutput(BaseModel):
    """What a sim snapshot answers to one request."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = Field(description="'stop' | 'length' | 'refusal'")
    latency_ms: float = Field(description="simulated provider latency (reported, not slept)")
    reasoning_tokens: int = Field(default=0, description="part of output_tokens spent thinking")


def resolve(model_id: str, aliases: dict[str, str] | None = None) -> str:
    """The snapshot id a sim model id (snapshot or alias) names; raises :class:`UnknownSnapshot`."""
    target = (ALIASES if aliases is None else aliases).get(model_id, model_id)
    if target not in SNAPSHOTS:
        raise UnknownSnapshot(model_id)
    return target


def count_tokens(text: str) -> int:
    """Deterministic token approximation: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def count_input_tokens(system: str | None, messages: list[Message]) -> int:
    """Prompt tokens: the text plus 4 tokens of framing per message (the system text counts as one)."""
    parts = ([system] if system else []) + [m.content for m in messages]
    return sum(count_tokens(p) + 4 for p in parts)


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) that is a pure function of ``parts``."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# ---- what the sim "understands" of a ticket ---------------------------------------------------

_TEAM_WORDS: dict[str, re.Pattern[str]] = {
    "billing": re.compile(r"\b(refund\w*|charg\w*|invoic\w*|billing|billed|payment\w*)\b"),
    "technical": re.compile(r"\b(error\w*|crash\w*|bug\w*|login|log in|broken|not working|api)\b"),
    "shipping": re.compile(r"\b(package\w*|deliver\w*|shipping|shipped|shipment|tracking|parcel)\b"),
    "account": re.compile(r"\b(password\w*|e-?mail\w*|account\w*|username|sign in)\b"),
}
_URGENT = re.compile(r"\b(urgent\w*|outage\w*|down|immediately|asap|emergency|critical)\b")
_IMPACT = re.compile(r"\b(crash\w*|error\w*|broken|fail\w*|cannot|can't|unable|lost|twice|blocked)\b")
_SENSITIVE = re.compile(
    r"\b(hack\w*|exploit\w*|bypass\w*|someone else'?s?|another (user|customer|person)'?s?)\b"
)
_TIER_POINTS = {"enterprise": 1, "platinum": 1, "gold": 1, "free": -1}
# What production tickets carry and curated golden sets seldom do: an order or reference number.
_REFERENCE = re.compile(
    r"\b(?:order|ref(?:erence)?|invoice|case|ticket)\s*(?:no\.?|number)?\s*#?\s*\d{3,}\b", re.I
)
_TIER_RE = re.compile(r"\btier\s*:\s*([\w-]+)", re.I)
_TICKET_RE = re.compile(r"\bticket\s*:\s*(.+)", re.I | re.S)


def triage_truth(customer_tier: str, ticket_body: str) -> dict[str, str]:
    """The correct triage of a ticket, by the sim's keyword rules (see README.md).

    team: the team with most keyword hits, ties broken in the order billing, technical, shipping,
    account; no hit -> technical. severity: 2 points per distinct urgency word (at most 2), 1 per
    distinct impact word (at most 2), +1 for gold/platinum/enterprise, -1 for free; >= 5 urgent,
    3-4 high, 1-2 medium, otherwise low.
    """
    text = ticket_body.lower()
    hits = {team: len(pattern.findall(text)) for team, pattern in _TEAM_WORDS.items()}
    best = max(hits.values())
    team = next((t for t in TEAMS if hits[t] == best), "technical") if best else "technical"
    urgent = len({m.group(0) for m in _URGENT.finditer(text)})
    impact = len({m.group(0) for m in _IMPACT.finditer(text)})
    points = 2 * min(urgent, 2) + min(impact, 2) + _TIER_POINTS.get(customer_tier.strip().lower(), 0)
    severity = "urgent" if points >= 5 else "high" if points >= 3 else "medium" if points >= 1 else "low"
    return {"severity": severity, "team": team}


def _parse_ticket(messages: list[Message]) -> tuple[str, str] | None:
    """(tier, ticket) when the last user message is a triage request, else None."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    if _GRADING.match(last) or _COMPARING.match(last):  # a judge's prompt quotes tickets; it is not one
        return None
    ticket = _TICKET_RE.search(last)
    if not ticket:
        return None
    tier = _TIER_RE.search(last)
    return (tier.group(1) if tier else "standard"), ticket.group(1).strip()


# ---- what the sim reads in the prompt ---------------------------------------------------------

_ASKS_JSON = re.compile(r"\bjson\b", re.I)
_NO_PROSE = re.compile(
    r"no prose|no code ?fences?|no markdown|raw json|without (any )?(prose|markdown|code ?fences?)"
    r"|do not wrap|don't wrap|no explanation",
    re.I,
)


class _Instructions(BaseModel):
    asks_json: bool
    no_prose: bool
    named_fields: tuple[str, ...]


def _read_instructions(system: str | None, params: CallParams) -> _Instructions:
    text = system or ""
    json_mode = params.response_format == "json"  # JSON mode: valid JSON guaranteed, no prose
    named = tuple(f for f in ("severity", "team") if re.search(rf"\b{f}\b", text, re.I))
    return _Instructions(
        asks_json=json_mode or bool(_ASKS_JSON.search(text)),
        no_prose=json_mode or bool(_NO_PROSE.search(text)),
        named_fields=named,
    )


# ---- the answer -------------------------------------------------------------------------------

_WRAPS = (
    "Sure! Here is the triage:\n```json\n{json}\n```",
    "Here's my assessment of this ticket:\n\n```json\n{json}\n```\n\n"
    "I routed it by the main topic of the ticket and set the severity from its urgency and the "
    "customer's tier. Let me know if you want me to adjust anything.",
    "```json\n{json}\n```",
)
# How sim-drift answers a production ticket it wraps: naming the ticket's reference (redaction rules see it).
_PRODUCTION_WRAP = "Triage for {reference}:\n```json\n{json}\n```\nI can escalate it if needed."


def _noisy(answer: dict[str, str], snap: SnapshotInfo, key: str, params: CallParams) -> dict[str, str]:
    """With the snapshot's seeded noise rate, get one field wrong (what epochs measure)."""
    temperature = 1.0 if params.temperature is None else min(params.temperature, 2.0)
    rate = snap.noise_rate * (0.5 + 0.5 * temperature)
    if _unit(snap.id, "noise", key, params.seed) >= rate:
        return answer
    wrong = dict(answer)
    if _unit(snap.id, "noise-field", key, params.seed) < 0.5:
        level = SEVERITIES.index(answer["severity"])
        wrong["severity"] = SEVERITIES[level - 1 if level == len(SEVERITIES) - 1 else level + 1]
    else:
        wrong["team"] = TEAMS[(TEAMS.index(answer["team"]) + 1) % len(TEAMS)]
    return wrong


def _triage_text(
    snap: SnapshotInfo, tier: str, ticket: str, how: _Instructions, key: str, params: CallParams
) -> str | None:
    """The triage answer's text, or None for a refusal."""
    if snap.refuses_sensitive and _SENSITIVE.search(ticket.lower()):
        return None
    answer = _noisy(triage_truth(tier, ticket), snap, key, params)
    if snap.literal_fields:
        # Literal reading: only the fields the prompt names; "triage" alone means routing.
        answer = {f: answer[f] for f in (how.named_fields or ("team",))}
    if not how.asks_json:
        return snap.plain_template.format(severity=answer.get("severity", ""), team=answer.get("team", ""))
    body = json.dumps(answer)
    reference = _REFERENCE.search(ticket)
    # JSON mode constrains decoding, so only a prompt-level JSON request can be wrapped.
    json_mode = params.response_format == "json"
    if reference and not json_mode and _unit(snap.id, "production-wrap", key) < snap.production_wrap_rate:
        return _PRODUCTION_WRAP.format(reference=reference.group(0), json=body)
    # Whether a case gets wrapped depends on the case, not the seed: a stable regression.
    if not how.no_prose and _unit(snap.id, "wrap", key) < snap.prose_wrap_rate:
        template = _WRAPS[int(_unit(snap.id, "wrap-style", key) * len(_WRAPS))]
        return template.format(json=body)
    return body


_GRADING = re.compile(r"^You grade an AI system's output against a rubric\.", re.S)
_GRADED_OUTPUT = re.compile(r"<Output>\n(.*?)\n</Output>", re.S)


def _grading_text(last: str) -> str | None:
    """Every snapshot grades the llm-rubric prompt the same way: 1 for an output that is one JSON object and
    nothing else, 0 otherwise (the sim's one rubric: "a raw JSON object"); None when it is not that prompt."""
    if not _GRADING.match(last):
        return None
    found = _GRADED_OUTPUT.search(last)
    try:
        ok = found is not None and isinstance(json.loads(found.group(1)), dict)
    except ValueError:
        ok = False
    reason = "The output is one JSON object." if ok else "The output is not a bare JSON object."
    return json.dumps({"reason": reason, "pass": ok, "score": 1.0 if ok else 0.0})


_COMPARING = re.compile(r"^You compare two AI system outputs to the same input against a rubric\.", re.S)
_COMPARED = {side: re.compile(rf"<Output {side}>\n(.*?)\n</Output {side}>", re.S) for side in "AB"}


def _bare_json(text: str | None) -> bool:
    try:
        return text is not None and isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _comparing_text(last: str) -> str | None:
    """Every snapshot judges the pairwise prompt (pairshift.pairwise) by the same rubric: the output that is
    one bare JSON object wins; both or neither: a tie. None when it is not that prompt."""
    if not _COMPARING.match(last):
        return None
    ok = {side: _bare_json(m.group(1) if (m := rx.search(last)) else None) for side, rx in _COMPARED.items()}
    winner = "tie" if ok["A"] == ok["B"] else ("A" if ok["A"] else "B")
    return json.dumps({"winner": winner})


def _generic_text(snap: SnapshotInfo, messages: list[Message], how: _Instructions) -> str:
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    graded = _grading_text(last)
    if graded is None:
        graded = _comparing_text(last)
    if graded is not None:
        return graded
    topic = " ".join(last.split())[:160]
    text = snap.generic_template.format(topic=topic)
    return json.dumps({"answer": text}) if how.asks_json else text


def _clip(text: str, params: CallParams, reasoning: int = 0) -> tuple[str, str]:
    """Apply stop sequences and what max_tokens leaves after ``reasoning``; returns (text, finish_reason)."""
    for stop in params.stop or []:
        if stop and stop in text:
            text = text[: text.index(stop)]
    limit = max(0, params.max_tokens - reasoning) * CHARS_PER_TOKEN
    if len(text) > limit:
        return text[:limit], "length"
    return text, "stop"


def _reasoning(snap: SnapshotInfo, params: CallParams) -> int:
    """Tokens a reasoning snapshot thinks before answering (at most the whole max_tokens)."""
    if not snap.reasoning_tokens:
        return 0
    wanted = snap.reasoning_tokens.get(params.reasoning_effort or "", snap.reasoning_tokens[""])
    return min(wanted, params.max_tokens)


def simulate(snapshot_id: str, system: str | None, messages: list[Message], params: CallParams) -> SimOutput:
    """The snapshot's answer to one request (``snapshot_id`` may be a sim alias)."""
    snap = SNAPSHOTS[resolve(snapshot_id)]
    key = json.dumps([system, [[m.role, m.content] for m in messages]])
    how = _read_instructions(system, params)
    ticket = _parse_ticket(messages)
    refused = _unit(snap.id, "refusal", key, params.seed) < snap.refusal_rate
    text = (
        None
        if refused
        else (_triage_text(snap, *ticket, how, key, params) if ticket else _generic_text(snap, messages, how))
    )
    reasoning = _reasoning(snap, params)
    if text is None:
        text, finish = REFUSAL_TEXT, "refusal"
    else:
        text, finish = _clip(text, params, reasoning)
    output_tokens = count_tokens(text) + reasoning
    jitter = 0.9 + 0.2 * _unit(snap.id, "latency", key, params.seed)
    return SimOutput(
        text=text,
        input_tokens=count_input_tokens(system, messages),
        output_tokens=output_tokens,
        finish_reason=finish,
        latency_ms=round((snap.base_latency_ms + snap.ms_per_output_token * output_tokens) * jitter, 3),
        reasoning_tokens=reasoning,
    )
