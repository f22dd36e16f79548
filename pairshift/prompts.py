"""Prompt versions: content hashing and rendering in a sandboxed Jinja2 environment with StrictUndefined.

A template may only use the variables its prompt version declares; ``check_template`` enforces that at
apply time so a typo fails ``pairshift apply``, not a production call.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateProblem(ValueError):
    """A template that does not compile, or uses a variable its prompt version does not declare."""


def content_hash(system: str | None, template: str, variables: list[str], params: dict[str, Any]) -> str:
    blob = json.dumps(
        {"system": system, "template": template, "variables": sorted(variables), "params": params},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def template_variables(source: str) -> set[str]:
    try:
        return set(meta.find_undeclared_variables(_env.parse(source)))
    except TemplateError as exc:
        raise TemplateProblem(f"template does not compile: {exc}") from exc


def check_template(system: str | None, template: str, declared: list[str]) -> None:
    """Refuse a template (or system text) that uses an undeclared variable."""
    used = template_variables(template) | (template_variables(system) if system else set())
    missing = sorted(used - set(declared))
    if missing:
        raise TemplateProblem(
            f"uses undeclared variable(s) {', '.join(missing)} (declared: {', '.join(declared) or 'none'})"
        )


@lru_cache(maxsize=256)
def _compiled(
    source: str,
):  # compiling is ~1000x slower than rendering; evals render the same template per case
    return _env.from_string(source)


def render(system: str | None, template: str, variables: dict[str, Any]) -> tuple[str | None, str]:
    """Render (system, user message). A missing variable raises TemplateProblem naming it."""
    try:
        sys_text = _compiled(system).render(variables) if system else None
        return sys_text, _compiled(template).render(variables)
    except TemplateError as exc:
        raise TemplateProblem(f"cannot render: {exc}") from exc
