"""docker-compose.yml cannot run here (no Docker engine); this keeps its shape honest by reading it."""

from __future__ import annotations

from pathlib import Path

import yaml


def test_compose_has_the_production_shape(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"kafka", "postgres", "registry", "ingest", "fanout", "realtime", "front"}
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("registry", "ingest", "fanout", "realtime"):
        build = services[name]["build"]
        dockerfile = repo_root / build["dockerfile"]
        assert build["context"] == "." and dockerfile.is_file(), name
        assert f"--package gravity-{name}" in dockerfile.read_text(), name
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
        assert env["GRAVITY_ENV"] == "production"
    assert "DATABASE_URL" in services["registry"]["environment"]
    assert "DATABASE_URL" not in services["ingest"]["environment"]


def test_front_routes_as_the_contract_says(repo_root: Path) -> None:
    conf = (repo_root / "deploy" / "nginx.conf").read_text()
    assert "location = /v1/webhooks/ringcentral { proxy_pass http://ingest; }" in conf
    assert "location = /v1/ws {" in conf and "proxy_pass http://realtime;" in conf
    assert "location /v1/ { proxy_pass http://registry; }" in conf
