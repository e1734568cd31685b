"""docker-compose.yml cannot run here (no Docker engine); this keeps its shape honest by reading it.

The file is validated against the Compose Specification's JSON Schema, kept beside the deployment tests
in tests/deploy/compose-spec.json (github.com/compose-spec/compose-spec, Apache-2.0, the copy that
check-jsonschema 0.39.0 vendors; compose-spec.LICENSE).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

SERVICES = ("registry", "ingest", "fanout", "realtime")
SECRETS = ("POSTGRES_PASSWORD", "GRAVITY_ADMIN_TOKEN", "GRAVITY_SECRET_KEY")


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    return yaml.safe_load((repo_root / "docker-compose.yml").read_text())


def test_compose_has_the_production_shape(repo_root: Path, compose: dict[str, Any]) -> None:
    services = {name: s for name, s in compose["services"].items() if "profiles" not in s}
    assert set(services) == {
        "kafka",
        "postgres",
        "topics",
        "registry",
        "ingest",
        "fanout",
        "realtime",
        "front",
    }
    assert services["topics"]["command"] == ["gravity-registry", "topics"]
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in SERVICES:
        build = services[name]["build"]
        dockerfile = repo_root / build["dockerfile"]
        assert build["context"] == "." and dockerfile.is_file(), name
        assert f"--package gravity-{name}" in dockerfile.read_text(), name
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
        assert env["GRAVITY_ENV"] == "production"
        # behind the front, uvicorn must believe its X-Forwarded-* headers
        assert env["FORWARDED_ALLOW_IPS"]
    assert "DATABASE_URL" in services["registry"]["environment"]
    assert "DATABASE_URL" not in services["ingest"]["environment"]
    # only the front is published (the optional observability profile binds loopback only)
    assert [name for name, service in services.items() if "ports" in service] == ["front"]
    for name, service in compose["services"].items():
        if "profiles" in service:
            assert all(str(port).startswith("127.0.0.1:") for port in service.get("ports", [])), name


def test_compose_matches_the_compose_specification(repo_root: Path, compose: dict[str, Any]) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs", reason="jsonschema-rs validates the Compose schema")
    schema = json.loads((repo_root / "tests" / "deploy" / "compose-spec.json").read_text())
    errors = [
        f"{list(e.instance_path)}: {e.message}"
        for e in jsonschema_rs.validator_for(schema).iter_errors(compose)
    ]
    assert errors == []


def test_kafka_keeps_its_log_dirs_on_the_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    mounts = {volume.split(":")[1] for volume in kafka["volumes"]}
    off_volume = [d for d in log_dirs.split(",") if not any(d == m or d.startswith(m + "/") for m in mounts)]
    assert off_volume == [], mounts


def test_every_container_restarts_and_has_a_healthcheck(
    compose: dict[str, Any], service_ports: dict[str, int]
) -> None:
    for name, service in compose["services"].items():
        if name == "topics":  # a one-shot: retried until it succeeds, then done
            assert service.get("restart") == "on-failure"
            continue
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
    for name in SERVICES:
        test = compose["services"][name]["healthcheck"]["test"]
        # the image has python, not curl or wget
        assert test[:3] == ["CMD", "python", "-c"], name
        assert f"http://127.0.0.1:{service_ports[name]}/readyz" in test[3], name


def test_dependants_wait_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "registry": {"kafka", "topics", "postgres"},
        "ingest": {"kafka", "topics"},
        "fanout": {"kafka", "topics"},
        "realtime": {"kafka", "registry"},
        "front": {"registry", "ingest", "realtime"},
    }
    for name, needs in expected.items():
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a list"
        assert set(depends) == needs, name
        for dependency, d in depends.items():
            want = "service_completed_successfully" if dependency == "topics" else "service_healthy"
            assert d["condition"] == want, (name, dependency)


def test_no_secret_has_a_default(repo_root: Path) -> None:
    text = (repo_root / "docker-compose.yml").read_text()
    for secret in SECRETS:
        uses = re.findall(rf"\$\{{{secret}(:?[-?+]?)", text)
        assert uses, f"{secret} is never read"
        assert set(uses) == {":?"}, f"{secret} must be required (${{{secret}:?…}}), found {uses}"


def test_front_routes_as_the_contract_says(repo_root: Path) -> None:
    conf = (repo_root / "deploy" / "nginx.conf").read_text()
    assert "location = /v1/webhooks/ringcentral { proxy_pass http://ingest; }" in conf
    assert "location = /v1/ws {" in conf and "proxy_pass http://realtime;" in conf
    assert "location /v1/ { proxy_pass http://registry; }" in conf
