"""`prompt: external` deployments: the prompt lives in the app, pairshift moves the model only.

Such a deployment's pairs are ``external+<model>`` in the registry, the router and the observations (the
split routes what the registry controls: the model); the prompt version the app states in
``X-Pairshift-Prompt`` is recorded with every gateway observation (``prompt_version``). A migration of such
a deployment is model-only: its plan carries the prompt version the app stated most recently
(:func:`stated_prompt`), so the baseline is (that version, the old snapshot) and the target (that version, the
new snapshot); a ``to_prompt`` is refused (a prompt change ships in the app).

Its eval has no template to render: each case carries the request itself, as ``pairshift datasets capture``
records gateway traffic: ``vars.messages`` (the app's turns), optional ``vars.system`` and ``vars.params``
(the call parameters the app sent). :func:`request_for` builds the provider request of a case for either
kind of prompt, so eval batches and the preflight send what the gateway would have sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session

from pairshift.prompts import TemplateProblem, render
from pairshift.providers import CallParams, Message
from pairshift.registry.models import Observation, PromptVersion

EXTERNAL = "external"
# Call parameters a captured request may carry (what the gateway reads of a request; seed is the epoch's).
CASE_PARAMS = frozenset(CallParams.model_fields) - {"seed"}


def is_external(prompt_id: str | None) -> bool:
    return prompt_id == EXTERNAL


def external_prompt() -> PromptVersion:
    """The prompt of an ``external`` pair: never stored, it renders nothing (cases carry their messages)."""
    return PromptVersion(
        id=EXTERNAL,
        name=EXTERNAL,
        version="app",
        system=None,
        template="",
        variables=["messages"],
        params={},
        content_hash="external",
    )


def prompt_row(s: Session, prompt_id: str) -> PromptVersion | None:
    """The registry's prompt version, or the external prompt for ``external``."""
    return external_prompt() if is_external(prompt_id) else s.get(PromptVersion, prompt_id)


def case_request(variables: Mapping[str, Any]) -> tuple[str | None, list[Message], dict[str, Any]]:
    """(system, turns, params) of a case of an external deployment; a case that is not a request raises
    :class:`TemplateProblem` naming what is wrong."""
    turns = variables.get("messages")
    if not isinstance(turns, list) or not turns:
        raise TemplateProblem(
            "a `prompt: external` deployment evaluates requests: the case needs vars.messages, a list of "
            "{role, content} turns (as `pairshift datasets capture` records them)"
        )
    try:
        messages = [Message.model_validate(t) for t in turns]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise TemplateProblem(f"vars.messages.{where}: {first['msg']}") from None
    if messages[-1].role != "user":
        raise TemplateProblem("vars.messages: the last turn is the user's")
    system = variables.get("system")
    if system is not None and not isinstance(system, str):
        raise TemplateProblem("vars.system: a string")
    raw = variables.get("params") or {}
    if not isinstance(raw, Mapping):
        raise TemplateProblem("vars.params: an object of call parameters")
    params = {k: v for k, v in raw.items() if k in CASE_PARAMS}
    return system or None, messages, params


def request_for(
    prompt: PromptVersion, variables: Mapping[str, Any]
) -> tuple[str | None, list[Message], dict[str, Any]]:
    """(system, turns, params) of one case under ``prompt``: rendered from its template, or, for the external
    prompt, the case's own request. Raises :class:`TemplateProblem` when it cannot be built."""
    if is_external(prompt.id):
        return case_request(variables)
    system, user = render(prompt.system, prompt.template, dict(variables))
    return system, [Message(role="user", content=user)], dict(prompt.params)


def stated_prompt(s: Session, deployment: str) -> str | None:
    """The prompt version the app stated (``X-Pairshift-Prompt``) on its most recent control call that did."""
    return s.scalars(
        select(Observation.prompt_version)
        .where(
            Observation.deployment == deployment,
            Observation.variant == "control",
            Observation.prompt_version.is_not(None),  # type: ignore[union-attr]
        )
        .order_by(Observation.id.desc())  # type: ignore[union-attr]
        .limit(1)
    ).first()


def stated_prompts(s: Session, deployment: str, migration: str) -> list[str]:
    """The prompt versions the app stated on the candidate's calls during ``migration`` (the ledger's evidence
    of what a promoted ``external`` pair served with)."""
    rows = s.scalars(
        select(Observation.prompt_version)
        .where(
            Observation.deployment == deployment,
            Observation.migration == migration,
            Observation.variant == "candidate",
            Observation.prompt_version.is_not(None),  # type: ignore[union-attr]
        )
        .distinct()
    )
    return sorted(rows)
