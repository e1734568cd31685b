"""The dashboards, alert rules and the documented metric list cannot drift from what the code defines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gravity_service.metrics import (
    FanoutMetrics,
    IngestMetrics,
    RealtimeMetrics,
    RegistryMetrics,
    ServiceMetrics,
)

METRIC = re.compile(r"\bgravity_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _defined() -> dict[str, str]:
    """Every family the services' metrics objects define, by name, with its type."""
    families: dict[str, str] = {}
    for metrics in (IngestMetrics(), RegistryMetrics(), FanoutMetrics(), RealtimeMetrics()):
        for family in metrics.registry.collect():
            families[family.name] = family.type
    return families


def _series_names(families: dict[str, str]) -> set[str]:
    """The names a query can use: counters with ``_total``, histograms' ``_bucket``/``_sum``/``_count``."""
    return {name + suffix for name, kind in families.items() for suffix in SUFFIXES[kind]}


def _dashboard_exprs(repo_root: Path) -> Iterator[tuple[str, str]]:
    for path in sorted((repo_root / "deploy" / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        yield from _panel_exprs(path.name, dashboard["panels"])


def _panel_exprs(source: str, panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for panel in panels:
        for target in panel.get("targets", ()):
            yield f"{source}: {panel['title']}", target["expr"]
        yield from _panel_exprs(source, panel.get("panels", []))


def _rule_exprs(repo_root: Path) -> Iterator[tuple[str, str]]:
    rules = yaml.safe_load((repo_root / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def test_every_metric_the_dashboards_and_alerts_use_is_defined(repo_root: Path) -> None:
    series = _series_names(_defined())
    used = [*_dashboard_exprs(repo_root), *_rule_exprs(repo_root)]
    assert len(used) >= 10
    unknown = [(where, name) for where, expr in used for name in METRIC.findall(expr) if name not in series]
    assert unknown == []


@pytest.mark.parametrize(
    "panel",
    [
        "Inbound notifications",
        "Projection latency",
        "Delivery success ratio",
        "Delivery lag",
        "Retries pending",
        "Consumer lag per group",
        "WebSocket connections",
    ],
)
def test_the_dashboard_shows_what_operators_need(repo_root: Path, panel: str) -> None:
    titles = [where.split(": ", 1)[1] for where, _ in _dashboard_exprs(repo_root)]
    assert any(title.startswith(panel) for title in titles), titles


def test_the_alerts_cover_lag_delivery_keeper_and_disabled_apps(repo_root: Path) -> None:
    exprs = dict(_rule_exprs(repo_root))
    assert any("gravity_kafka_consumer_lag" in e and "deriv" in e for e in exprs.values())
    assert any("gravity_fanout_attempts_total" in e and "<" in e for e in exprs.values())
    assert any('gravity_registry_keeper_checks_total{outcome="error"}' in e for e in exprs.values())
    assert any("gravity_fanout_apps_disabled_total" in e for e in exprs.values())


def test_prometheus_scrapes_every_service(repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "gravity-registry": ["registry:8000"],
        "gravity-ingest": ["ingest:8001"],
        "gravity-realtime": ["realtime:8002"],
        "gravity-fanout": ["fanout:8003"],
    }
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_compose_observability_profile_mounts_the_deploy_files(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    profiled = {name for name, s in compose["services"].items() if "observability" in s.get("profiles", [])}
    assert profiled == {"prometheus", "grafana"}
    mounts = [v.split(":")[0] for name in profiled for v in compose["services"][name]["volumes"]]
    for source in mounts:
        if source.startswith("./"):
            assert (repo_root / source).exists(), source
    # profile services publish on loopback only
    for name in profiled:
        assert all(p.startswith("127.0.0.1:") for p in compose["services"][name]["ports"]), name


def test_the_documented_metrics_are_exactly_the_defined_ones(repo_root: Path) -> None:
    """docs/operations.md lists every metric (part of the contract) and nothing that does not exist."""
    text = (repo_root / "docs" / "operations.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(gravity_[a-z0-9_]+)`", section, re.MULTILINE))
    exposed = {name + ("_total" if kind == "counter" else "") for name, kind in _defined().items()}
    assert documented == exposed


def test_a_fresh_registry_renders_and_parses() -> None:
    for metrics in (ServiceMetrics(), IngestMetrics(), RegistryMetrics(), FanoutMetrics(), RealtimeMetrics()):
        names = {f.name for f in text_string_to_metric_families(metrics.render().decode())}
        assert "gravity_http_requests" in names and "gravity_kafka_consumer_lag" in names
