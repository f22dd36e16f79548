"""`pairshift doctor`: what a newcomer's stack needs, checked one thing at a time (PRODUCT §11).

Each check is a pure function of what was observed (an address and the error connecting to it, a task
queue's pollers and their ages, the environment...) returning a :class:`Check`: passed or not, what was
found, and what to do when it failed. :func:`run_checks` does the observing; the CLI prints one line per
check and exits 1 when any failed. Nothing here changes anything: the registry is read, never created or
upgraded, and no secret is ever printed (a token's shape is described, never its value).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Literal

from pairshift.providers.base import is_local_url

Status = Literal["ok", "fail", "skip"]

# A poller is listed by the server for a few minutes after its last poll; a live worker re-polls at least
# every ~70 s (a long poll's length), so a poller not seen for longer than this has gone away.
POLLER_FRESH_S = 120.0
CALENDAR_STALE_DAYS = 90
DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "openai-compatible": None}
BASE_URL_ENV = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL", "openai-compatible": None}
SLACK_BOT_TOKEN = re.compile(r"^xoxb-[A-Za-z0-9-]+$")
SLACK_APP_TOKEN = re.compile(r"^xapp-[A-Za-z0-9-]+$")
SLACK_SIGNING_SECRET = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def line(self) -> str:
        mark = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}[self.status]
        text = f"{mark} {self.name}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix and self.status != "ok" else text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def skip(name: str, why: str) -> Check:
    return Check(name, "skip", why)


# ----------------------------------------------------------------------------------------- the checks


def temporal_check(address: str, error: str | None) -> Check:
    if error is None:
        return ok("temporal", f"reachable at {address}")
    return fail(
        "temporal",
        f"cannot reach {address} ({error})",
        "start it (`pairshift server`, or `make demo` for everything) or set PAIRSHIFT_TEMPORAL_ADDRESS",
    )


def namespace_check(namespace: str, found: bool, error: str | None = None) -> Check:
    name = "namespace"
    if found:
        return ok(name, f"'{namespace}' exists")
    if error:
        return fail(name, f"cannot describe '{namespace}' ({error})", "check PAIRSHIFT_NAMESPACE and access")
    return fail(
        name,
        f"'{namespace}' does not exist",
        f"create it (`temporal operator namespace create {namespace}`) or set PAIRSHIFT_NAMESPACE",
    )


def queue_check(
    queue: str,
    kind: str,
    poller_ages_s: Iterable[float] | None,
    error: str | None = None,
    *,
    fix: str = "start a worker: `pairshift worker`",
) -> Check:
    """``kind``: "workflow" or "activity"; ``poller_ages_s``: seconds since each poller's last poll."""
    name = f"worker on {queue} ({kind})"
    if error is not None or poller_ages_s is None:
        return fail(name, f"cannot describe the task queue ({error})", "check Temporal access")
    ages = sorted(poller_ages_s)
    live = [a for a in ages if a <= POLLER_FRESH_S]
    if live:
        return ok(name, f"{len(live)} poller(s), last poll {live[0]:.0f}s ago")
    if ages:
        return fail(name, f"no poll for {ages[0]:.0f}s (the worker stopped)", fix)
    return fail(name, "no worker polls it", fix)


def registry_check(
    where: str,
    *,
    exists: bool,
    current: Iterable[str] = (),
    heads: Iterable[str] = (),
    error: str | None = None,
) -> Check:
    name = "registry"
    if not exists:
        return fail(
            name,
            f"no registry at {where}",
            "`pairshift apply -f examples/` creates it (or set PAIRSHIFT_HOME)",
        )
    if error is not None:
        return fail(
            name,
            f"cannot read {where} ({error})",
            "check PAIRSHIFT_DATABASE_URL and that the database is up (`docker compose up -d postgres`)",
        )
    current, heads = sorted(current), sorted(heads)
    if current == heads:
        return ok(name, f"{where} at head ({', '.join(heads)})")
    return fail(
        name,
        f"{where} at {', '.join(current) or 'no revision'}, head is {', '.join(heads)}",
        "any pairshift command that opens it upgrades it, e.g. `pairshift get deployments`",
    )


def key_check(
    model_id: str,
    provider: str,
    api_key_env: str | None,
    base_url: str | None,
    env: Mapping[str, str],
) -> Check:
    """A configured model can call its provider: a key is set, or none is needed (sim, a loopback URL)."""
    name = f"key for {model_id}"
    if provider == "sim":
        return ok(name, "sim model: no key needed")
    url = base_url or (env.get(BASE_URL_ENV.get(provider) or "") or None)
    var = api_key_env or DEFAULT_KEY_ENV.get(provider)
    if var and env.get(var):
        return ok(name, f"{var} is set")
    if is_local_url(url):
        return ok(name, f"loopback base URL {url}: no key needed")
    if var is None:
        return fail(name, f"{provider} model names no api_key_env", "set api_key_env in its model config")
    return fail(name, f"{var} is not set", f"export {var}=... in the worker's environment")


def slack_checks(
    channels: Mapping[str, str],
    slack_approvals: bool,
    env: Mapping[str, str],
) -> list[Check]:
    """``channels``: policy name -> its notice.slack_channel (only policies that name one);
    ``slack_approvals``: whether one of those policies takes approvals from Slack (the buttons)."""
    if not channels:
        return [ok("slack", "no policy names a Slack channel (notices go to the log and CLI)")]
    where = ", ".join(f"{c} (policy {p})" for p, c in sorted(channels.items()))
    checks = []
    bot = env.get("SLACK_BOT_TOKEN") or ""
    if not bot:
        checks.append(
            fail(
                "slack bot token",
                f"SLACK_BOT_TOKEN is not set; notices go to {where}",
                "export SLACK_BOT_TOKEN=xoxb-... (the app's Bot User OAuth Token)",
            )
        )
    elif not SLACK_BOT_TOKEN.match(bot):
        checks.append(
            fail(
                "slack bot token",
                "SLACK_BOT_TOKEN is not a bot token (xoxb-...)",
                "use the Bot User OAuth Token from the app's OAuth & Permissions page",
            )
        )
    else:
        checks.append(
            ok("slack bot token", f"SLACK_BOT_TOKEN has a bot token's shape; notices go to {where}")
        )
    app, secret = env.get("SLACK_APP_TOKEN") or "", env.get("SLACK_SIGNING_SECRET") or ""
    if app and not SLACK_APP_TOKEN.match(app):
        checks.append(
            fail(
                "slack app token",
                "SLACK_APP_TOKEN is not an app-level token (xapp-...)",
                "generate an app-level token with connections:write (Basic Information)",
            )
        )
    if secret and not SLACK_SIGNING_SECRET.match(secret):
        checks.append(
            fail(
                "slack signing secret",
                "SLACK_SIGNING_SECRET is not 32 hex digits",
                "copy the Signing Secret from the app's Basic Information page",
            )
        )
    if slack_approvals and not app and not secret:
        checks.append(
            fail(
                "slack buttons",
                "approvals may come from Slack but neither SLACK_SIGNING_SECRET nor SLACK_APP_TOKEN is set",
                "set SLACK_SIGNING_SECRET (`pairshift api` receives clicks) or SLACK_APP_TOKEN (Socket Mode)",
            )
        )
    elif slack_approvals and not any(c.failed for c in checks):
        how = "Socket Mode" if app else "signed requests to `pairshift api`"
        checks.append(ok("slack buttons", f"clicks arrive by {how}"))
    return checks


def calendar_check(newest: date | None, today: date) -> Check:
    name = "provider calendar"
    refresh = "check your models' retirement dates on the providers' pages, or upgrade pairshift"
    if newest is None:
        return fail(name, "the bundled calendar has no dated entry", refresh)
    age = (today - newest).days
    if age > CALENDAR_STALE_DAYS:
        return fail(name, f"last read on {newest}, {age} days ago (over {CALENDAR_STALE_DAYS})", refresh)
    return ok(name, f"last read on {newest}, {age} days ago")


# ----------------------------------------------------------------------------------------- observing


def short_error(text: str) -> str:
    """A connection error in a few words (the Temporal client's are a page of Rust debug output)."""
    lowered = text.lower()
    for needle, short in (
        ("connectionrefused", "connection refused"),
        ("connection refused", "connection refused"),
        ("dns error", "unknown host"),
        ("timed out", "timed out"),
    ):
        if needle in lowered:
            return short
    return (text.splitlines() or [""])[0][:200]


@dataclass
class RegistryView:
    """What the doctor read from the registry: its check, and the rows later checks need (when at head)."""

    check: Check
    models: list[Any] | None = None  # config-owned model rows (the ones whose keys are checked)
    policies: list[Any] | None = None
    queue_models: list[tuple[str, Any]] | None = None  # (id, limits) of every model row: the model queues


def read_registry(url: str) -> RegistryView:
    """Read the registry without creating or upgrading it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError
    from sqlmodel import Session, select

    from pairshift.registry.models import Model, PolicyRow
    from pairshift.registry.store import alembic_config, sqlite_path
    from pairshift.settings import masked_url

    where = masked_url(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return RegistryView(registry_check(where, exists=False))
    heads = ScriptDirectory.from_config(alembic_config(url)).get_heads()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    args = {"timeout": 5} if url.startswith("sqlite") else {"connect_timeout": 5}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_heads()
        check = registry_check(where, exists=True, current=current, heads=heads)
        if check.failed:
            return RegistryView(check)
        with Session(engine) as s:
            models = list(s.exec(select(Model).where(Model.source == "config")).all())
            policies = list(s.exec(select(PolicyRow)).all())
            all_models = [(m.id, m.limits) for m in s.exec(select(Model)).all()]
        return RegistryView(check, models, policies, all_models)
    except SQLAlchemyError as exc:
        return RegistryView(registry_check(where, exists=True, error=str(exc).splitlines()[0][:200]))
    finally:
        engine.dispose()


async def _poller_ages(
    client: Any, namespace: str, queue: str, kind: str
) -> tuple[list[float] | None, str | None]:
    import time

    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    qtype = (
        TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
        if kind == "workflow"
        else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    )
    try:
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace, task_queue=TaskQueue(name=queue), task_queue_type=qtype
            ),
            timeout=_timedelta(5),
        )
    except Exception as exc:  # noqa: BLE001 - any RPC failure is the check's finding
        return None, str(exc).splitlines()[0][:200]
    now = time.time()
    return [max(0.0, now - p.last_access_time.ToSeconds()) for p in resp.pollers], None


def _timedelta(seconds: float):
    from datetime import timedelta

    return timedelta(seconds=seconds)


async def temporal_checks(
    address: str, namespace: str, main_queue: str, model_queues: list[str] | None
) -> list[Check]:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    from pairshift.temporal_client import connect

    try:
        client = await asyncio.wait_for(connect(address, namespace), timeout=10)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, TLS...: the finding
        msg = "timed out" if isinstance(exc, TimeoutError) else short_error(str(exc) or type(exc).__name__)
        why = "Temporal is unreachable"
        return [
            temporal_check(address, msg[:200]),
            skip("namespace", why),
            skip(f"workers on {main_queue}", why),
        ]
    checks = [temporal_check(address, None)]
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=_timedelta(5)
        )
        checks.append(namespace_check(namespace, True))
    except Exception as exc:  # noqa: BLE001
        from temporalio.service import RPCError, RPCStatusCode

        missing = isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND
        checks.append(namespace_check(namespace, False, None if missing else str(exc)[:200]))
        return [*checks, skip(f"workers on {main_queue}", "the namespace is not usable")]
    for kind in ("workflow", "activity"):
        ages, error = await _poller_ages(client, namespace, main_queue, kind)
        checks.append(queue_check(main_queue, kind, ages, error))
    if model_queues is None:
        checks.append(skip("workers on model queues", "the registry could not be read"))
    for queue in model_queues or []:
        ages, error = await _poller_ages(client, namespace, queue, "activity")
        checks.append(
            queue_check(
                queue,
                "activity",
                ages,
                error,
                fix="start a worker: `pairshift worker` (or `--queues providers`)",
            )
        )
    return checks


def config_checks(view: RegistryView, env: Mapping[str, str]) -> list[Check]:
    """Keys of configured models and Slack, from the registry's rows (skipped when it could not be read)."""
    from pairshift.policy import Policy

    if view.models is None or view.policies is None:
        return [skip("provider keys and slack", "the registry could not be read")]
    checks = [
        key_check(m.id, m.provider, m.api_key_env, m.base_url, env)
        for m in sorted(view.models, key=lambda m: m.id)
    ]
    if not view.models:
        checks.append(skip("provider keys", "no model configured yet: `pairshift apply -f examples/`"))
    channels, slack_approvals = {}, False
    for row in view.policies:
        policy = Policy.model_validate(row.spec)
        if policy.notice.slack_channel:
            channels[row.name] = policy.notice.slack_channel
            slack_approvals = slack_approvals or "slack" in policy.approvals.channels
    return [*checks, *slack_checks(channels, slack_approvals, env)]


async def run_checks(env: Mapping[str, str], today: date) -> list[Check]:
    """Every check against the stack the settings point at."""
    from pairshift.provider_calendar import load_calendar, newest_read_on
    from pairshift.ratelimit import model_queue_rates
    from pairshift.settings import get_settings

    settings = get_settings()
    view = await asyncio.to_thread(read_registry, settings.registry_url)
    model_queues = (
        sorted(model_queue_rates(settings.task_queue, view.queue_models))
        if view.queue_models is not None
        else None
    )
    checks = await temporal_checks(
        settings.temporal_address, settings.namespace, settings.task_queue, model_queues
    )
    checks.append(view.check)
    checks.extend(config_checks(view, env))
    checks.append(calendar_check(newest_read_on(load_calendar()), today))
    return checks
