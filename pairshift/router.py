"""The traffic router: which pair serves a unit of a deployment right now (PRODUCT §9).

``Router(deployment).resolve(unit_key)`` is on production's hot path, so it does no I/O and takes no lock: it
reads an immutable :class:`Split` that a daemon thread swaps in (one attribute assignment, atomic in CPython)
every ``refresh_s`` seconds from the registry database. When the registry is unreachable the last split keeps
serving; the outage is logged once and counted.

Assignment is sticky: bucket = SHA-256(f"{migration}:{unit_key}") mod 10,000, candidate iff bucket <
round(percent * 100). Raising the percent only adds buckets, so a unit on the candidate stays there, and the
control share is exactly the complement. With no candidate pair everyone is control on the active pair.

Apps that are not in Python resolve over HTTP instead: ``GET /v1/deployments/{name}/resolve?unit=...`` of
``pairshift api`` answers the same :class:`Assignment` from a router of its own.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlmodel import Session, select

from pairshift.capture import CaptureError, LiveCapture, compile_patterns, live_capture, store_samples
from pairshift.completion import Call, FallbackWindow, ServeError, serve
from pairshift.datasets import Case
from pairshift.mirror import Check, Mirror, MirrorJob
from pairshift.observations import ObservationIn, ObservationWriter
from pairshift.observations.store import DETAIL_MAX, hash_unit
from pairshift.online_checks import build as build_online_checks
from pairshift.output_samples import ExampleKeeper
from pairshift.output_samples import store as store_examples
from pairshift.policy import Policy, ShadowBudget
from pairshift.prompts import render
from pairshift.providers import CallParams, Completion, Message, ModelSpec
from pairshift.registry.models import Deployment, PolicyRow, PromptVersion, pair_id, utcnow
from pairshift.registry.store import Registry, open_registry
from pairshift.resolver import resolve_model

log = logging.getLogger(__name__)

BUCKETS = 10_000
Variant = Literal["control", "candidate"]


class UnknownDeployment(LookupError):
    """The router was pointed at a deployment the registry does not have."""


class Assignment(BaseModel):
    """Which pair serves a unit; also the JSON answer of the HTTP resolve route (PRODUCT §9)."""

    model_config = ConfigDict(frozen=True)

    deployment: str
    pair: str
    prompt: str
    model: str
    variant: Variant
    migration: str | None
    # The candidate's percent of the split that answered; an observation carries it back, so a call stored
    # after the stage moved still counts in the stage that routed it (pairshift.observations.store._stage_of).
    # None: not known (an Assignment built by hand, an older server's answer): the stage is inferred.
    percent: float | None = None


@dataclass(frozen=True)
class Split:
    """Everything ``resolve`` and ``complete`` need, loaded at once; replaced whole, never mutated."""

    deployment: str
    migration: str | None
    threshold: int  # candidate iff bucket < threshold
    control: Assignment
    candidate: Assignment | None
    prompts: Mapping[str, PromptVersion] = field(default_factory=dict)
    models: Mapping[str, ModelSpec] = field(default_factory=dict)
    params: Mapping[str, CallParams] = field(default_factory=dict)
    # The fallback chain: (prompt version or None for the assigned pair's prompt, model), tried in order.
    fallback: tuple[tuple[str | None, str], ...] = ()
    external: bool = False  # `prompt: external`: the app sends its own messages (the gateway)
    fallback_notice_rate: float = 0.01  # the policy's notice.fallback_rate
    notice_channel: str | None = None
    capture: LiveCapture | None = None  # a running `pairshift datasets capture` of the deployment
    online_checks: Case | None = None  # the deployment's online_checks, run on every served output
    # The deployment's redact: patterns and the built-in ones, compiled; None when a pattern does not compile
    # (then no example output is kept: nothing is stored unredacted).
    redact: tuple[re.Pattern[str], ...] | None = ()
    judge_rate: float = (
        0.0  # the policy's canary.judge.sample_rate: outputs kept for the judge in a migration
    )
    # A shadow stage: units whose bucket is below this have their control requests mirrored to the candidate.
    mirror_threshold: int = 0
    shadow_budget: ShadowBudget = field(default_factory=ShadowBudget)

    @property
    def percent(self) -> float:
        return self.threshold / 100.0


def bucket(migration: str | None, unit_key: str) -> int:
    """The unit's bucket in 0..9,999 for this migration (a new migration reshuffles units)."""
    digest = hashlib.sha256(f"{migration}:{unit_key}".encode()).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def load_split(session: Session, deployment: str) -> Split:
    """Read one deployment's split, its prompt versions and model specs from the registry."""
    dep = session.get(Deployment, deployment)
    if dep is None:
        raise UnknownDeployment(f"unknown deployment {deployment!r}: apply it first (pairshift apply -f ...)")
    pairs = [(dep.active_prompt, dep.active_model)]
    has_candidate = bool(dep.candidate_prompt and dep.candidate_model)
    if has_candidate:
        pairs.append((dep.candidate_prompt, dep.candidate_model))  # type: ignore[arg-type]
    chain = tuple(_chain_entry(entry) for entry in dep.fallback or ())
    prompt_ids = {p for p, _ in pairs} | {p for p, _ in chain if p}
    prompts = {p.id: p for p in session.exec(select(PromptVersion).where(PromptVersion.id.in_(prompt_ids)))}
    # Each model name through the one resolver: an alias a snapshot row lists is served by that row, as the
    # eval evaluated it (an exact-id lookup here used to leave it out: every call failed with LookupError).
    model_ids = {m for _, m in pairs} | {m for _, m in chain}
    resolved = {m: resolve_model(session, m) for m in model_ids}
    models = {name: r for name, r in resolved.items() if r is not None}
    policy_row = session.get(PolicyRow, dep.policy)
    policy = Policy.model_validate(policy_row.spec) if policy_row else Policy()
    percent = min(max(dep.canary_percent, 0.0), 100.0)

    def assignment(prompt: str, model: str, variant: Variant) -> Assignment:
        return Assignment(
            deployment=dep.name,
            pair=pair_id(prompt, model),
            prompt=prompt,
            model=model,
            variant=variant,
            migration=dep.migration,
            percent=percent if has_candidate else 0.0,
        )

    candidate = assignment(*pairs[1], "candidate") if has_candidate else None  # type: ignore[misc]
    shadow = min(max(dep.shadow_percent or 0.0, 0.0), 100.0)
    return Split(
        deployment=dep.name,
        migration=dep.migration,
        threshold=round(percent * 100) if candidate else 0,
        control=assignment(*pairs[0], "control"),
        candidate=candidate,
        prompts=prompts,
        models={name: r.spec() for name, r in models.items()},
        params={pid: _params(p.params) for pid, p in prompts.items()},
        fallback=chain,
        external=dep.prompt_external,
        fallback_notice_rate=policy.notice.fallback_rate,
        notice_channel=policy.notice.slack_channel,
        capture=live_capture(session, dep),
        online_checks=_online_checks(dep),
        redact=_redact_patterns(dep),
        # the canary judge scores served outputs of a live stage (a shadow stage is judged pairwise instead)
        judge_rate=policy.canary.judge.sample_rate
        if policy.canary.judge and dep.migration and percent > 0
        else 0.0,
        mirror_threshold=round(shadow * 100) if candidate and dep.migration else 0,
        shadow_budget=policy.canary.shadow_budget,
    )


def _online_checks(dep: Deployment) -> Case | None:
    """The deployment's online checks (validated at apply; a row edited by hand is refused here, loudly)."""
    try:
        return build_online_checks(dep.online_checks or [])
    except ValueError as exc:
        log.error("deployment %s: online_checks not run: %s", dep.name, exc)
        return None


def _redact_patterns(dep: Deployment) -> tuple[re.Pattern[str], ...] | None:
    try:
        return tuple(compile_patterns(dep.redact or []))
    except CaptureError as exc:
        log.error("deployment %s: no example outputs kept: %s", dep.name, exc)
        return None


def _chain_entry(entry: str) -> tuple[str | None, str]:
    """A ``fallback:`` item as (prompt version or None, model): ``p@v+model`` or a bare model id."""
    prompt, sep, model = entry.rpartition("+")
    return (prompt, model) if sep and "@" in prompt else (None, entry)


def _params(raw: Mapping[str, Any]) -> CallParams:
    # Prompt params may carry keys the provider layer does not take (e.g. a vendor extra): keep what it takes.
    return CallParams.model_validate({k: v for k, v in raw.items() if k in CallParams.model_fields})


class RoutedCompletion(BaseModel):
    """What :meth:`Router.complete` returns: the output, where the unit was routed, the provider's answer."""

    output: str
    assignment: Assignment
    completion: Completion


class Router:
    """In-process router of one deployment (module doc). Use as a context manager or start()/close()."""

    def __init__(
        self,
        deployment: str,
        registry: Registry | str | None = None,
        *,
        refresh_s: float = 2.0,
        writer: ObservationWriter | None = None,
        loader: Callable[[], Split] | None = None,
    ) -> None:
        self.deployment = deployment
        self.refresh_s = refresh_s
        self._registry_arg = registry
        self._registry: Registry | None = registry if isinstance(registry, Registry) else None
        self._loader = loader or self._load_from_registry
        self._owns_writer = writer is None
        self._writer = writer
        self._split: Split | None = None
        # One refresh at a time: a load that began before another must not swap its older split in after it
        # (the background thread and an explicit refresh() racing put a stale stage's split back).
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh_failures = 0  # every failed refresh, over the router's life
        self.last_error: str | None = None
        self._loaded_at = 0.0  # monotonic time of the last successful load
        self._in_outage = False
        self.fallbacks = FallbackWindow()  # the last hour's calls and fallbacks (the fallback-rate notice)
        self._samples: deque[tuple[str, dict[str, Any]]] = deque(maxlen=10_000)  # redacted, to be stored
        self._sample_rng = random.Random()
        self.examples = ExampleKeeper()  # invalid outputs kept for the migration report, redacted
        self.mirror = Mirror(deployment)  # a shadow stage's mirrored calls, off the user's path

    # ---- lifecycle

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            arg = self._registry_arg
            self._registry = open_registry(arg if isinstance(arg, str) else None)
        return self._registry

    def _load_from_registry(self) -> Split:
        with self.registry.session() as s:
            return load_split(s, self.deployment)

    def start(self) -> Router:
        """Load the split synchronously (raises :class:`UnknownDeployment`), then refresh in background."""
        if self._split is None:
            self._split = self._loader()
            self._loaded_at = time.monotonic()
        if self._writer is None:
            self._writer = ObservationWriter(self.registry)
        self._writer.start()
        if self._thread is None and self.refresh_s > 0:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._refresh_loop, name=f"pairshift-router-{self.deployment}", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop refreshing and flush queued observations (a shared writer is left to its owner)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.refresh_s))
            self._thread = None
        self.mirror.close()
        self.flush_samples()
        if self._writer is not None and self._owns_writer:
            self._writer.close()

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.flush_samples()
            self.refresh()

    def notice_registry(self) -> Registry | None:
        """The registry the fallback-rate notice reads the fleet from; None for a router fed by a loader alone
        (it then decides from its own calls)."""
        if self._registry is None and self._registry_arg is None and self._loader != self._load_from_registry:
            return None
        return self.registry

    # ---- captures (pairshift datasets capture)

    def sample(self, assignment: Assignment, request: Mapping[str, Any] | None, output: str) -> None:
        """Maybe keep this call for a running capture: control calls only, redacted before it is queued."""
        capture = self.split.capture
        if capture is None or request is None or assignment.variant != "control":
            return
        if capture.sample(self._sample_rng):
            self._samples.append((capture.id, capture.case(request, output)))

    def keep_invalid(
        self, assignment: Assignment, request: Mapping[str, Any] | None, output: str, detail: str
    ) -> None:
        """Maybe keep an output that failed an online check as an example (redacted before it is queued)."""
        patterns = self.split.redact
        if patterns is None:
            return
        self.examples.offer(
            deployment=assignment.deployment,
            migration=assignment.migration,
            pair=assignment.pair,
            variant=assignment.variant,
            detail=detail,
            request=request,
            output=output,
            patterns=patterns,
        )

    def sample_for_judge(
        self, unit_key: str, assignment: Assignment, request: Mapping[str, Any] | None, output: str
    ) -> None:
        """Maybe keep this served output for the canary's judge (``canary.judge.sample_rate``), redacted."""
        split = self.split
        if not split.judge_rate or split.redact is None or assignment.migration is None:
            return
        if self._sample_rng.random() < split.judge_rate:
            self.examples.queue_for_judge(
                assignment, hash_unit(unit_key), split.percent, request, output, split.redact
            )

    def mirror_request(
        self,
        unit_key: str,
        assignment: Assignment,
        request_for: Callable[[Assignment], Call],
        check: Check,
        request: Mapping[str, Any] | None,
        output: str,
        outcome: str,
        latency_ms: float,
        cost_usd: float,
    ) -> bool:
        """In a shadow stage, offer a request control answered to the mirror (pairshift.mirror); never waits.

        Mirrored: the units whose bucket is below the stage's share (sticky, as routing). Nothing is mirrored
        when the deployment's redact rules do not compile (nothing is stored unredacted)."""
        split = self.split
        if not split.mirror_threshold or split.candidate is None or assignment.variant != "control":
            return False
        if split.migration is None or bucket(split.migration, unit_key) >= split.mirror_threshold:
            return False
        if split.redact is None:
            self.mirror.counts["unredactable"] += 1
            return False
        job = MirrorJob(
            unit_hash=hash_unit(unit_key),
            shadow=split.mirror_threshold / 100.0,
            control=assignment,
            candidate=split.candidate,
            request_for=request_for,
            check=check,
            request=request,
            control_output=output,
            control_outcome=outcome,
            control_latency_ms=latency_ms,
            control_cost_usd=cost_usd,
            patterns=split.redact,
        )
        return self.mirror.offer(job, split.shadow_budget)

    def flush_samples(self) -> int:
        """Store the queued capture samples, example outputs and answered mirrors (the refresh thread does,
        and close()); returns how many capture samples."""
        mirrored = self.mirror.take()
        if mirrored:
            try:
                with self.registry.session() as s:
                    s.add_all(mirrored)
                    s.commit()
            except Exception as exc:  # noqa: BLE001 - shadow pairs are best effort; serving goes on
                log.warning("router %s: %d shadow pairs not stored: %s", self.deployment, len(mirrored), exc)
        examples = self.examples.take()
        if examples:
            try:
                with self.registry.session() as s:
                    store_examples(s, examples)
            except Exception as exc:  # noqa: BLE001 - examples are best effort; serving goes on
                log.warning(
                    "router %s: %d example outputs not stored: %s", self.deployment, len(examples), exc
                )
        taken: list[tuple[str, dict[str, Any]]] = []
        while self._samples:
            taken.append(self._samples.popleft())
        if not taken:
            return 0
        try:
            with self.registry.session() as s:
                for capture_id in {c for c, _ in taken}:
                    store_samples(s, capture_id, [d for c, d in taken if c == capture_id])
        except Exception as exc:  # noqa: BLE001 - a capture is best effort; serving goes on
            log.warning("router %s: %d capture samples not stored: %s", self.deployment, len(taken), exc)
            return 0
        return len(taken)

    def refresh(self) -> bool:
        """Reload the split now; on failure keep the last one. Returns whether the load succeeded."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> bool:
        try:
            split = self._loader()
        except Exception as exc:  # noqa: BLE001 - any failure: keep serving the last known split
            self.refresh_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if not self._in_outage:
                self._in_outage = True
                log.warning(
                    "router %s: registry refresh failed, serving the split loaded %.0fs ago: %s",
                    self.deployment,
                    self.stale_s,
                    self.last_error,
                )
            return False
        self._split = split  # the atomic swap: readers see the old split or the new one, never a mix
        self._loaded_at = time.monotonic()
        if self._in_outage:
            self._in_outage = False
            log.info(
                "router %s: registry reachable again after %d failed refresh(es)",
                self.deployment,
                self.refresh_failures,
            )
        return True

    @property
    def split(self) -> Split:
        split = self._split
        if split is None:
            raise RuntimeError(
                f"router for {self.deployment} is not started: call start() or use `with Router(...)`"
            )
        return split

    @property
    def stale_s(self) -> float:
        """Seconds since the split was last loaded successfully."""
        return time.monotonic() - self._loaded_at

    @property
    def writer(self) -> ObservationWriter:
        if self._writer is None:
            raise RuntimeError(f"router for {self.deployment} is not started")
        return self._writer

    # ---- the hot path

    def resolve(self, unit_key: str) -> Assignment:
        """The unit's assignment under the current split: no I/O, no lock, a shared immutable answer."""
        split = self._split
        if split is None:
            raise RuntimeError(
                f"router for {self.deployment} is not started: call start() or use `with Router(...)`"
            )
        if split.threshold and bucket(split.migration, unit_key) < split.threshold:
            return split.candidate  # type: ignore[return-value]
        return split.control

    # ---- calling and recording

    def record(
        self,
        unit_key: str,
        assignment: Assignment,
        *,
        latency_ms: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        outcome: Literal["ok", "error", "invalid", "fallback", "abandoned"] = "ok",
        score: float | None = None,
        at: datetime | None = None,
        resolved_model: str | None = None,
        served_pair: str | None = None,
        prompt_version: str | None = None,
        ttft_ms: float | None = None,
        detail: str | None = None,
    ) -> None:
        """Queue one observation of a call the app made itself (non-blocking; the unit key is stored hashed).

        ``resolved_model`` is the response's ``model`` field: recording it is how an alias that moves is seen.
        ``at`` defaults to now, the call's time, not the flush's: a backlog flushed after a stage change still
        lands in the stage that routed it.
        """
        self.writer.put(
            ObservationIn(
                deployment=assignment.deployment,
                pair=assignment.pair,
                variant=assignment.variant,
                unit=unit_key,
                latency_ms=latency_ms,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost_usd,
                outcome=outcome,
                score=score,
                at=at or utcnow(),
                migration=assignment.migration,
                percent=assignment.percent,
                resolved_model=resolved_model,
                served_pair=served_pair,
                prompt_version=prompt_version,
                ttft_ms=ttft_ms,
                detail=None if detail is None else detail[:DETAIL_MAX],
            )
        )

    def request(
        self, assignment: Assignment, variables: Mapping[str, Any]
    ) -> tuple[ModelSpec, str | None, list[Message], CallParams]:
        """The provider request for ``assignment``: model spec, rendered system text, messages, params."""
        split = self.split
        prompt = split.prompts.get(assignment.prompt)
        spec = split.models.get(assignment.model)
        if prompt is None or spec is None:
            missing = f"prompt {assignment.prompt}" if prompt is None else f"model {assignment.model}"
            raise LookupError(f"{missing} of deployment {self.deployment} is not in the registry")
        system, user = render(prompt.system, prompt.template, dict(variables))
        return spec, system, [Message(role="user", content=user)], split.params[prompt.id]

    def call_for(self, variables: Mapping[str, Any]) -> Callable[[Assignment], Call]:
        """The request builder of :func:`pairshift.completion.serve` that renders a pair's prompt."""

        def build(assignment: Assignment) -> Call:
            return Call(*self.request(assignment, variables))

        return build

    async def complete(
        self,
        unit_key: str,
        variables: Mapping[str, Any],
        *,
        validate: Callable[[str], bool] | None = None,
        score: Callable[[str], float | None] | None = None,
    ) -> RoutedCompletion:
        """Resolve, render, call the provider, record the observation; a provider error is recorded, raised.

        ``validate(output)`` False records the call as ``invalid``; ``score(output)`` attaches a 0..1 score
        (a callback that raises records the call as ``invalid``). A prompt that cannot be rendered with
        ``variables`` is recorded as an error of its pair (a candidate prompt that needs a variable the app
        does not send is exactly what a canary must catch). The same implementation serves
        ``POST /v1/deployments/{name}/complete`` and the gateway (:mod:`pairshift.completion`).
        """
        try:
            served = await serve(
                self,
                unit_key,
                self.call_for(variables),
                validate=validate,
                score=score,
                capture_request={"vars": dict(variables)},
            )
        except ServeError as exc:
            raise exc.cause from None
        return RoutedCompletion(
            output=served.output, assignment=served.assignment, completion=served.completion
        )
