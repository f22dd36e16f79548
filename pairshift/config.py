"""Declarative registry config: the YAML documents ``pairshift apply -f PATH`` reads (PRODUCT §4).

This module parses and validates; ``pairshift.apply`` writes. Every problem is a ``ConfigError`` whose one
line names the file, the object and the field, so a user can fix it without reading a traceback.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pairshift.config_files import UnsafeFile, load_yaml, read_capped
from pairshift.people import Person
from pairshift.policy import Policy, format_validation_error
from pairshift.providers.base import ApiName, DroppableParam, MaxTokensParam, is_local_url

# Variables a model's key may never be read from: pairshift's own, Slack's and the databases'. A config that
# could name them would send, say, the Slack bot token to whatever base_url it also names.
FORBIDDEN_KEY_ENV = re.compile(r"^(PAIRSHIFT_|SLACK_|PG|POSTGRES|MYSQL|TEMPORAL_|DB_)|DATABASE|_DSN$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def key_env_problem(name: str) -> str | None:
    """Why ``name`` may not hold a model's API key, or None."""
    if not SECRET_NAME.match(name):
        return "must be the NAME of an environment variable (e.g. VLLM_API_KEY), never the key itself"
    if FORBIDDEN_KEY_ENV.search(name.upper()):
        return f"{name} is pairshift's, Slack's or a database's variable, never a model's key"
    return None


class ConfigError(ValueError):
    """A config problem; the message is one line naming the place."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Strict):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million input tokens.")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million output tokens.")
    cached_input_per_mtok: float | None = Field(
        None,
        ge=0,
        description="USD per million input tokens read from the provider's prompt cache; None = 0.1x input "
        "for anthropic (Anthropic's rule), the input price otherwise.",
    )
    batch_input_per_mtok: float | None = Field(
        None,
        ge=0,
        description="USD per million input tokens through a batch API; None = half the input price.",
    )
    batch_output_per_mtok: float | None = Field(
        None,
        ge=0,
        description="USD per million output tokens through a batch API; None = half the output price.",
    )


class Limits(_Strict):
    """The provider's limits for this model; evals run as fast as they allow and no faster."""

    requests_per_minute: int | None = Field(None, gt=0, description="Requests per minute; None = unlimited.")
    tokens_per_minute: int | None = Field(
        None, gt=0, description="Input + output tokens per minute; None = unlimited."
    )
    concurrency: int | None = Field(
        None, gt=0, description="Calls in flight at once; None = the eval's default."
    )
    calls_per_batch: int | None = Field(
        None,
        gt=0,
        description="Provider calls per eval batch on the model's own task queue; None = about 10 s of "
        "requests_per_minute, 20..200.",
    )


class ModelConfig(_Strict):
    id: str = Field(..., min_length=1, description="Provider model id: a snapshot, or an alias.")
    provider: Literal["anthropic", "openai", "openai-compatible", "sim"] = Field(
        ...,
        description="Wire format: Anthropic Messages, OpenAI chat completions (also vLLM, Ollama, gateways), "
        "or sim.",
    )
    aliases: list[str] = Field(
        default_factory=list, description="Names the provider may point at this snapshot."
    )
    price: Price = Field(default_factory=Price)
    deprecated_on: date | None = Field(None, description="When the provider announced the retirement.")
    retires_on: date | None = Field(
        None, description="After this date calls fail; scans act lead_days before."
    )
    replacement: str | None = Field(None, description="The model a deprecation migration moves to.")
    base_url: str | None = Field(
        None, description="API base URL; None = the provider's (or ANTHROPIC_/OPENAI_BASE_URL)."
    )
    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable holding the key: one matching *_API_KEY or listed "
        "under `secrets:`; never a PAIRSHIFT_*, SLACK_* or database variable.",
    )
    limits: Limits = Field(default_factory=Limits, description="Rate limits of this model at the provider.")
    drop_params: list[DroppableParam] | None = Field(
        None,
        description="Request rule: parameters this model refuses, never sent to it (LiteLLM's word); the "
        "eval "
        "report and the ledger say which were dropped. None = the calendar's rules for the model's family; "
        "[] = send everything.",
    )
    max_tokens_param: MaxTokensParam | None = Field(
        None,
        description="Request rule: the field that carries the token limit; None = the family's, else "
        "max_completion_tokens for openai and max_tokens for openai-compatible (gateways in front of "
        "reasoning models want max_completion_tokens).",
    )
    api: ApiName | None = Field(
        None, description="openai / openai-compatible: `responses` calls the Responses API; None = chat."
    )
    timeout_s: float | None = Field(
        None, gt=0, le=3600, description="Seconds one attempt may take; None = 60."
    )
    max_attempts: int | None = Field(
        None,
        ge=1,
        le=10,
        description="Attempts per call, the first included (the retry budget; a timed-out call is sent at "
        "most "
        "twice); None = 4.",
    )

    @model_validator(mode="after")
    def _rules_fit_the_provider(self) -> ModelConfig:
        if self.api == "responses" and self.provider not in ("openai", "openai-compatible"):
            raise ValueError(f"api: the Responses API is OpenAI's; provider {self.provider} has none")
        if self.max_tokens_param is not None and self.provider == "anthropic":
            raise ValueError("max_tokens_param: Anthropic's Messages API always takes max_tokens")
        if self.provider == "openai-compatible" and self.base_url and not is_local_url(self.base_url):
            if not self.api_key_env:
                raise ValueError(
                    f"api_key_env: an openai-compatible model at {self.base_url} must name the environment "
                    "variable holding its key (otherwise OPENAI_API_KEY would be sent to that host)"
                )
        return self

    def request_rules(self) -> dict[str, Any]:
        """The request rules this entry states (unset ones left out: the calendar's family fills them)."""
        fields = ("drop_params", "max_tokens_param", "api", "timeout_s", "max_attempts")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_secret(cls, v: str | None) -> str | None:
        problem = key_env_problem(v) if v is not None else None
        if problem:
            raise ValueError(problem)
        return v


class PromptConfig(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="Prompt name.")
    version: str = Field(
        ...,
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Immutable version; changed text needs a new one.",
    )
    system: str | None = Field(None, description="System text (Jinja2, sandboxed, StrictUndefined).")
    template: str = Field(..., description="User message template (Jinja2, sandboxed, StrictUndefined).")
    variables: list[str] = Field(default_factory=list, description="Every variable the templates may use.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Call params: temperature, max_tokens, response_format, stop."
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


class DatasetConfig(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="Dataset name.")
    path: str | None = Field(None, description="JSONL, CSV or OpenAI Evals JSONL, relative to the YAML file.")
    promptfoo: str | None = Field(None, description="A promptfooconfig.yaml, relative to the YAML file.")
    version: str | None = Field(
        None, description="Optional label; default: the first 12 hex digits of the hash."
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


EXTERNAL_PROMPT = "external"  # `prompt: external`: the deployment's prompt lives in the app


class DeploymentConfig(_Strict):
    name: str = Field(
        ..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="The feature production code calls."
    )
    prompt: str = Field(
        ...,
        pattern=r"^([A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+|external)$",
        description="Initial prompt version, name@version; `external` when the prompt lives in the app and "
        "the app calls through the gateway (/v1/chat/completions, /v1/messages) with its own messages.",
    )
    model: str = Field(..., description="Initial model: a snapshot id, or an alias (flagged unpinned).")
    dataset: str | None = Field(None, description="Golden dataset for migrations' evals.")
    policy: str | Policy = Field("default", description="A policy name, or an inline policy.")
    fallback: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="Pairs (prompt@version+model) or model ids tried in order when the assigned pair's call "
        "fails with 404/410, 429 or 5xx after retries, or a timeout; the call is recorded as outcome "
        "`fallback`, an error of the pair that failed. Refused at apply: the primary model, a model twice, "
        "an unknown or retired model.",
    )

    redact: list[str] = Field(
        default_factory=list,
        description="Regexes whose matches `pairshift datasets capture` replaces with [REDACTED] before a "
        "sampled request or output is stored (keys, bearer tokens and emails are always redacted).",
    )

    online_checks: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Reference-free assertions (the dataset vocabulary with inline values: is-json, "
        "contains-json with a JSON schema, regex, not-contains, starts-with, word-count, ...) run on every "
        "output served through pairshift (Router.complete, /complete, the gateway); an output that fails one "
        "is recorded as outcome `invalid` with the failing check, and the canary gates invalid_rate. "
        "Model-graded types, scripts, latency and cost are refused.",
    )

    @field_validator("online_checks")
    @classmethod
    def _online_checks(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from pairshift.online_checks import build

        build(v)  # an OnlineCheckError (a ValueError) names the check
        return v

    @field_validator("redact")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        import re

        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regex: {exc}") from None
        return v

    @property
    def external(self) -> bool:
        return self.prompt == EXTERNAL_PROMPT


class ConfigDoc(_Strict):
    secrets: list[str] = Field(
        default_factory=list,
        description="Environment variables models may read their key from (besides any *_API_KEY).",
    )
    people: list[Person] = Field(
        default_factory=list, description="The humans approvals name, with their identities."
    )
    models: list[ModelConfig] = Field(default_factory=list)
    prompts: list[PromptConfig] = Field(default_factory=list)
    datasets: list[DatasetConfig] = Field(default_factory=list)
    deployments: list[DeploymentConfig] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)


class Located(BaseModel):
    """A config object with the file it came from (for error messages and relative paths)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    file: Path
    kind: str
    obj: Any
    root: Path | None = None  # the folder given to apply (or the file's): relative paths stay inside it

    @property
    def name(self) -> str:
        return getattr(self.obj, "id", None) or getattr(self.obj, "name", "?")

    def where(self, field: str | None = None) -> str:
        kind = self.kind.rstrip("s")
        return f"{self.file}: {kind} '{self.name}'" + (f": {field}" if field else "")


def config_files(path: Path) -> list[Path]:
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    files = [p for p in files if not p.name.startswith("promptfooconfig")]
    if not files:
        raise ConfigError(f"{path}: no .yaml or .yml files in this folder")
    return files


def _parse_file(file: Path) -> ConfigDoc:
    try:
        raw = load_yaml(read_capped(file))
    except UnsafeFile as exc:
        raise ConfigError(str(exc) if str(file) in str(exc) else f"{file}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if raw is None:
        return ConfigDoc()
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{file}: expected a mapping with models/prompts/datasets/deployments/policies at the top"
        )
    try:
        return ConfigDoc.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(file))) from None


KINDS = ("people", "models", "policies", "prompts", "datasets", "deployments")


def load_config(path: Path) -> list[Located]:
    """Every object of every file under ``path``, validated; duplicates across files refused."""
    located: list[Located] = []
    seen: dict[tuple[str, str], Path] = {}
    secrets: set[str] = set()
    root = path if path.is_dir() else path.parent
    for file in config_files(path):
        doc = _parse_file(file)
        for name in doc.secrets:
            problem = key_env_problem(name)
            if problem:
                raise ConfigError(f"{file}: secrets: {problem}")
            secrets.add(name)
        for kind in KINDS:
            for obj in getattr(doc, kind):
                item = Located(file=file, kind=kind, obj=obj, root=root)
                key = (kind, item.name)
                if key in seen:
                    raise ConfigError(f"{item.where()}: defined twice (also in {seen[key]})")
                seen[key] = file
                located.append(item)
    for item in located:
        env = getattr(item.obj, "api_key_env", None) if item.kind == "models" else None
        if env and env not in secrets and not env.endswith("_API_KEY"):
            raise ConfigError(
                f"{item.where('api_key_env')}: {env} is neither a *_API_KEY variable nor listed under "
                "`secrets:`; list it there to let models read it"
            )
    return located
