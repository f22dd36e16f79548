"""deploy/'s observability files cannot run here (no Prometheus, Grafana or collector), so these tests check
what can drift: every metric the dashboard queries is one pairshift exposes (or the Temporal SDK's), every
query is well bracketed, the gate bounds it draws are the ones /metrics exports, and the collector config
wires each pipeline to defined parts and sends only to POST /v1/traces with a token from the environment."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import Counter, Histogram

from pairshift.telemetry import metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "pairshift-dashboard.json"
METRIC = re.compile(r"\b((?:pairshift|temporal)_[a-z0-9_]+)\b(?!\s*\()")


def exposed() -> set[str]:
    names = {
        "pairshift_migrations",
        "pairshift_canary_percent",
        "pairshift_canary_bound",
    }  # RegistryCollector
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(value._name + "_total")
        elif isinstance(value, Histogram):
            names.update(value._name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])] + [
        v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)
    ]


def test_every_dashboard_query_reads_a_metric_pairshift_exposes():
    names = exposed()
    used = {m for q in queries() for m in METRIC.findall(q)}
    ours = {m for m in used if m.startswith("pairshift_")}
    assert ours and not ours - names, f"the dashboard queries metrics nobody exposes: {sorted(ours - names)}"
    assert {m for m in used if m.startswith("temporal_")}, "the Temporal SDK's own metrics are on the screen"


def test_every_query_is_well_bracketed_and_the_bounds_are_the_exported_ones():
    for q in queries():
        for opening, closing in ("()", "{}", "[]"):
            assert q.count(opening) == q.count(closing), q
    bounds = {b for q in queries() for b in re.findall(r'metric="(\w+)"', q)}
    assert bounds == set(metrics._bounds(None)), "the dashboard draws the bounds /metrics exports"


def test_the_collector_forks_genai_spans_to_pairshift():
    cfg = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    for name, pipeline in cfg["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            missing = set(pipeline.get(kind, [])) - set(cfg.get(kind, {}))
            assert not missing, f"pipeline {name} uses undefined {kind}: {missing}"
    ours = cfg["exporters"]["otlphttp/pairshift"]
    assert ours["traces_endpoint"].endswith("/v1/traces")
    assert re.fullmatch(r"Bearer \$\{env:[A-Z_]+\}", ours["headers"]["Authorization"]), (
        "a token from env only"
    )
    assert cfg["service"]["pipelines"]["traces/pairshift"]["exporters"] == ["otlphttp/pairshift"]
    assert "filter/genai" in cfg["service"]["pipelines"]["traces/pairshift"]["processors"]


def test_prometheus_reads_the_api_token_from_a_file():
    cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    api = next(job for job in cfg["scrape_configs"] if job["job_name"] == "pairshift-api")
    assert set(api["authorization"]) == {"type", "credentials_file"}
