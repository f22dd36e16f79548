"""Generate examples/datasets/support-triage.jsonl: a deterministic golden set of support tickets.

Run `python examples/generate_dataset.py` to regenerate; the output is committed so the dataset hash is
stable. Each ticket is built from a team's vocabulary and a severity cue; its expected triage is the sim
world's ground truth (``pairshift.sim.snapshots.triage_truth``: team from the vocabulary, severity from the
cue and the tier).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pairshift.sim.snapshots import triage_truth

TEAMS = {
    "billing": [
        "I was charged twice for my subscription",
        "my invoice shows the wrong amount",
        "I need a refund for last month",
        "the charge on my card is not mine",
        "why was I billed after cancelling",
    ],
    "technical": [
        "the app shows an error when I upload files",
        "the dashboard crashes on startup",
        "there is a bug in the export feature",
        "I cannot login, the page spins forever",
        "the API returns error 500",
    ],
    "account": [
        "I forgot my password and the reset email never arrives",
        "please change the email on my account",
        "how do I delete my account",
        "I want to add a teammate to my account",
        "my password reset link expired",
    ],
    "shipping": [
        "my package has not arrived",
        "the delivery was left at the wrong address",
        "tracking says shipping is delayed",
        "the package arrived damaged",
        "can you change my delivery date",
    ],
}
SEVERITY_CUES = {
    "urgent": ["Our whole team is down, this is an outage!", "URGENT: we need this fixed immediately."],
    "high": ["This is blocking our work today.", "Please treat this as high priority."],
    "medium": ["It is annoying but we can work around it.", "Would like this sorted this week."],
    "low": ["No rush, just wondering.", "Whenever you get a chance."],
}
TIERS = ["free", "pro", "gold", "enterprise"]
OPENERS = ["Hi,", "Hello team,", "Hey,", "Good morning,", ""]
CLOSERS = ["Thanks.", "Regards, Sam", "Cheers", "Thank you!", ""]


def make_case(i: int, rng: random.Random) -> dict:
    team = rng.choice(sorted(TEAMS))
    severity = rng.choice(sorted(SEVERITY_CUES))
    tier = rng.choice(TIERS)
    body = " ".join(
        x
        for x in (
            rng.choice(OPENERS),
            rng.choice(TEAMS[team]) + ".",
            rng.choice(SEVERITY_CUES[severity]),
            rng.choice(CLOSERS),
        )
        if x
    )
    expected = triage_truth(tier, body)
    return {
        "id": f"ticket-{i:04d}",
        "vars": {"customer_tier": tier, "ticket_body": body},
        "expected": json.dumps(expected, sort_keys=True),
        "assert": [
            {"type": "is-json"},
            {"type": "json-field", "path": "team", "value": expected["team"]},
            {"type": "json-field", "path": "severity", "value": expected["severity"]},
            {"type": "not-icontains", "value": "we will refund"},
        ],
        "tags": [expected["team"], tier],
    }


def main(n: int = 300, seed: int = 20261122) -> None:
    rng = random.Random(seed)
    out = Path(__file__).parent / "datasets" / "support-triage.jsonl"
    out.write_text("".join(json.dumps(make_case(i, rng)) + "\n" for i in range(n)))
    print(f"wrote {n} cases to {out}")


if __name__ == "__main__":
    main()
