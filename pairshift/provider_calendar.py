"""The provider calendar: retirement dates, replacements and prices of well-known snapshots (PRODUCT §4).

Two file formats are read:

- the bundled ``pairshift/data/provider_calendar.yaml`` (or any file of the same shape): ``models:`` entries
  with id, provider, aliases, price (input, output, cached input, batch), deprecated_on, retires_on,
  replacement, and where/when it was read; and ``families:``, the request rules of model families
  (:func:`family_rules`: OpenAI's reasoning models refuse temperature and max_tokens, ...);
- LiteLLM's ``model_prices_and_context_window.json``: a JSON object keyed by model name whose entries carry
  ``litellm_provider``, ``input_cost_per_token``/``output_cost_per_token`` (USD per token),
  ``cache_read_input_token_cost``, ``input_cost_per_token_batches``/``output_cost_per_token_batches`` and
  ``deprecation_date`` (in practice the retirement date). Only Anthropic and OpenAI chat entries are taken:
  those are the providers pairshift calls by their own ids.

A file is validated whole before anything is written: a malformed entry is a :class:`CalendarError` whose one
line names the file, the entry and the field, and the registry keeps the calendar it had. :func:`sync` then
writes ``source='calendar'`` model rows in the caller's transaction; a row that config wrote
(``source='config'``) is never changed, and alias rows that alias-drift detection keeps are left alone.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlmodel import Session

from pairshift.policy import format_validation_error
from pairshift.providers.rules import RequestRules
from pairshift.registry.models import Model, utcnow

BUNDLED = Path(__file__).parent / "data" / "provider_calendar.yaml"
LITELLM_PROVIDERS = {"anthropic": "anthropic", "openai": "openai"}
PER_MTOK = 1_000_000


class CalendarError(ValueError):
    """A calendar file that cannot be used; the one-line message names file, entry and field."""


class CalendarPrice(BaseModel):
    """Prices per million tokens, input and output."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(..., ge=0, description="USD per million input tokens.")
    output_per_mtok: float = Field(..., ge=0, description="USD per million output tokens.")
    cached_input_per_mtok: float | None = Field(None, ge=0, description="USD per million cache-read tokens.")
    batch_input_per_mtok: float | None = Field(None, ge=0, description="USD per million batch input tokens.")
    batch_output_per_mtok: float | None = Field(
        None, ge=0, description="USD per million batch output tokens."
    )


class CalendarEntry(BaseModel):
    """One snapshot as a provider published it. Fields left out of the file are left alone by a sync."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, description="The provider's snapshot id.")
    provider: Literal["anthropic", "openai", "openai-compatible", "sim"]
    aliases: list[str] = Field(
        default_factory=list, description="Names the provider points at this snapshot."
    )
    price: CalendarPrice | None = None
    deprecated_on: date | None = Field(None, description="When the retirement was announced.")
    retires_on: date | None = Field(None, description="From this day on, calls fail.")
    replacement: str | None = Field(None, description="The provider's recommended replacement.")
    source: str = Field(..., min_length=1, description="Where it was published (URL or file).")
    read_on: date = Field(..., description="When it was read: providers rewrite their pages.")
    read_from: str | None = Field(
        None, description="The page actually read when the provider's own could not be (a copy, or a quote)."
    )
    note: str | None = Field(None, description="What is and is not verified, in a sentence.")

    @field_validator("aliases")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if any(not a for a in v) or len(set(v)) != len(v):
            raise ValueError("aliases must be distinct, non-empty names")
        return v

    @model_validator(mode="after")
    def _dates_in_order(self) -> CalendarEntry:
        if self.deprecated_on and self.retires_on and self.retires_on < self.deprecated_on:
            raise ValueError(f"retires_on {self.retires_on} is before deprecated_on {self.deprecated_on}")
        if self.replacement == self.id or self.id in self.aliases:
            raise ValueError("a model cannot replace or alias itself")
        return self

    def row_values(self) -> dict[str, Any]:
        """The Model columns this entry sets: only the fields the file gave (a sync never blanks a column)."""
        given = self.model_fields_set
        values: dict[str, Any] = {"provider": self.provider}
        if "aliases" in given:
            values["aliases"] = list(self.aliases)
        if "price" in given and self.price is not None:
            values.update(self.price.model_dump(exclude_none=True))
        for name in ("deprecated_on", "retires_on", "replacement"):
            if name in given:
                values[name] = getattr(self, name)
        return values


# ----------------------------------------------------------------------------------------- loading


def load_calendar(path: Path | None = None, *, today: date | None = None) -> list[CalendarEntry]:
    """Every entry of a calendar file (default: the bundled one), validated; LiteLLM JSON is recognised."""
    path = path or BUNDLED
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalendarError(f"{path}: cannot read the calendar: {exc.strerror or exc}") from None
    if _is_litellm(path, text):
        return load_litellm(path, text, read_on=today or date.today())
    return load_native(path, text)


def _is_litellm(path: Path, text: str) -> bool:
    """LiteLLM's file is one JSON object keyed by model name; ours (YAML or JSON) has a ``models`` list."""
    if not text.lstrip().startswith("{"):
        return False
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return path.suffix.lower() == ".json"  # a broken .json file: let the JSON reader name the line
    return isinstance(data, dict) and not isinstance(data.get("models"), list)


def load_native(path: Path, text: str) -> list[CalendarEntry]:
    """The bundled format: ``models:`` entries (see ``pairshift/data/provider_calendar.yaml``)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CalendarError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CalendarError(f"{path}: expected a mapping with a `models:` list")
    entries: list[CalendarEntry] = []
    for i, raw in enumerate(doc["models"]):
        name = raw.get("id", "?") if isinstance(raw, dict) else "?"
        try:
            entries.append(CalendarEntry.model_validate(raw))
        except ValidationError as exc:
            raise CalendarError(format_validation_error(exc, f"{path}: models[{i}] ({name})")) from None
    _check_unique(path, entries)
    return entries


def load_litellm(path: Path, text: str, *, read_on: date) -> list[CalendarEntry]:
    """LiteLLM's price file: Anthropic and OpenAI chat models, with prices and ``deprecation_date``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalendarError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise CalendarError(f"{path}: expected a JSON object keyed by model name")
    entries = []
    for key, raw in data.items():
        if key == "sample_spec" or not isinstance(raw, dict):
            continue  # LiteLLM's first entry documents the fields; it is not a model
        provider = LITELLM_PROVIDERS.get(str(raw.get("litellm_provider", "")))
        if provider is None or raw.get("mode", "chat") != "chat":
            continue
        model_id = key.removeprefix(f"{raw['litellm_provider']}/")
        fields: dict[str, Any] = {
            "id": model_id,
            "provider": provider,
            "source": str(path),
            "read_on": read_on,
        }
        if "input_cost_per_token" in raw or "output_cost_per_token" in raw:
            fields["price"] = {
                "input_per_mtok": _per_mtok(raw.get("input_cost_per_token", 0)),
                "output_per_mtok": _per_mtok(raw.get("output_cost_per_token", 0)),
            } | {
                ours: _per_mtok(raw[theirs])
                for ours, theirs in _LITELLM_EXTRA_PRICES.items()
                if raw.get(theirs) is not None
            }
        if raw.get("deprecation_date") is not None:
            fields["retires_on"] = raw["deprecation_date"]
        try:
            entries.append(CalendarEntry.model_validate(fields))
        except ValidationError as exc:
            raise CalendarError(_litellm_error(exc, path, key)) from None
    _check_unique(path, entries)
    return entries


_LITELLM_EXTRA_PRICES = {
    "cached_input_per_mtok": "cache_read_input_token_cost",
    "batch_input_per_mtok": "input_cost_per_token_batches",
    "batch_output_per_mtok": "output_cost_per_token_batches",
}


def _per_mtok(per_token: Any) -> Any:
    # Rounded so that 3e-06 becomes 3.0, not 2.9999999999999996; a non-number is left for validation to name.
    if isinstance(per_token, (int, float)) and not isinstance(per_token, bool):
        return round(per_token * PER_MTOK, 6)
    return per_token


def _litellm_error(exc: ValidationError, path: Path, key: str) -> str:
    # Name LiteLLM's own field, not ours, so the user finds it in their file.
    theirs = {
        "retires_on": "deprecation_date",
        "price.input_per_mtok": "input_cost_per_token",
        "price.output_per_mtok": "output_cost_per_token",
        **{f"price.{ours}": t for ours, t in _LITELLM_EXTRA_PRICES.items()},
    }
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{theirs.get(loc, loc)}: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
    return f"{path}: {key}: " + "; ".join(parts)


def _check_unique(path: Path, entries: list[CalendarEntry]) -> None:
    seen: dict[str, str] = {}
    for e in entries:
        for name in (e.id, *e.aliases):
            if name in seen:
                raise CalendarError(f"{path}: {e.id}: {name} is already listed by {seen[name]}")
            seen[name] = e.id


# ----------------------------------------------------------------------------------------- families


class ModelFamily(RequestRules):
    """The request rules of a family of models, matched by id (shell-style patterns), with their source."""

    name: str = Field(..., min_length=1)
    providers: list[Literal["anthropic", "openai", "openai-compatible"]] = Field(..., min_length=1)
    match: list[str] = Field(..., min_length=1, description="Model id patterns (fnmatch), e.g. o3-*.")
    exclude: list[str] = Field(
        default_factory=list, description="Ids the patterns catch that are not members."
    )
    source: str = Field(..., min_length=1)
    read_on: date

    def covers(self, model_id: str, provider: str) -> bool:
        """Whether ``model_id`` at ``provider`` belongs to this family."""
        if provider not in self.providers or any(fnmatch.fnmatchcase(model_id, x) for x in self.exclude):
            return False
        return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.match)

    def rules(self) -> RequestRules:
        """The family's rules alone (without its name, patterns and source)."""
        return RequestRules.model_validate(self.model_dump(include=set(RequestRules.model_fields)))


def load_families(path: Path | None = None) -> list[ModelFamily]:
    """The ``families:`` of a calendar file (default: the bundled one); a malformed one names its entry."""
    path = path or BUNDLED
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    families = []
    for i, raw in enumerate(doc.get("families") or []):
        try:
            families.append(ModelFamily.model_validate(raw))
        except ValidationError as exc:
            name = raw.get("name", "?") if isinstance(raw, dict) else "?"
            raise CalendarError(format_validation_error(exc, f"{path}: families[{i}] ({name})")) from None
    return families


@functools.cache
def _bundled_families() -> tuple[ModelFamily, ...]:
    return tuple(load_families())


def family_rules(model_id: str, provider: str) -> RequestRules:
    """The bundled calendar's request rules for ``model_id`` (the first family that covers it), or none."""
    for family in _bundled_families():
        if family.covers(model_id, provider):
            return family.rules()
    return RequestRules()


REPLACEMENT_MARGIN_DAYS = 90


def replacement_problems(entries: list[CalendarEntry]) -> list[str]:
    """Replacements a migration must not be sent to: not a row of the calendar, or retiring before (or within
    90 days after) the model they replace. One line each; empty when the calendar keeps the rule."""
    by_name = {name: e for e in entries for name in (e.id, *e.aliases)}
    problems = []
    for entry in entries:
        if entry.replacement is None:
            continue
        replacement = by_name.get(entry.replacement)
        if replacement is None:
            problems.append(f"{entry.id}: replacement {entry.replacement} is not in the calendar")
        elif replacement.retires_on is not None and (
            entry.retires_on is None
            or replacement.retires_on <= entry.retires_on + timedelta(days=REPLACEMENT_MARGIN_DAYS)
        ):
            problems.append(
                f"{entry.id} (retires {entry.retires_on or 'on no known date'}): its replacement "
                f"{replacement.id} retires {replacement.retires_on}, "
                f"less than {REPLACEMENT_MARGIN_DAYS} days after"
            )
    return problems


def newest_read_on(entries: list[CalendarEntry]) -> date | None:
    """The most recent ``read_on`` of the entries: how fresh the calendar is."""
    return max((e.read_on for e in entries), default=None)


# ----------------------------------------------------------------------------------------- syncing


class SyncResult(BaseModel):
    """What ``pairshift models sync`` changed."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: int = 0
    kept_config: list[str] = Field(
        default_factory=list, description="Rows config owns: never changed by a sync."
    )


def sync(session: Session, entries: list[CalendarEntry]) -> SyncResult:
    """Write the entries as ``source='calendar'`` rows in the caller's transaction; config rows win."""
    result = SyncResult()
    for entry in entries:
        row = session.get(Model, entry.id)
        values = entry.row_values()
        if row is None:
            session.add(Model(id=entry.id, source="calendar", **values))
            result.created.append(entry.id)
            continue
        if row.source == "config":
            result.kept_config.append(entry.id)
            continue
        if row.is_alias:  # alias-drift detection owns where an alias points
            result.unchanged += 1
            continue
        changed = {k for k, v in values.items() if getattr(row, k) != v}
        if not changed and row.source == "calendar":
            result.unchanged += 1
            continue
        for k in changed:
            setattr(row, k, values[k])
        row.source, row.updated_at = "calendar", utcnow()
        session.add(row)
        result.updated.append(entry.id)
    return result
