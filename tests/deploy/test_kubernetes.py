"""deploy/kubernetes: the kustomize base and overlays, read as YAML, and rendered with kustomize where
`kubectl` or `kustomize` is installed and then validated against the Kubernetes API schemas."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gravity_events.topics import ALL_TOPICS

SERVICES = ("registry", "ingest", "realtime", "fanout")
KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent for p in (KUBERNETES / "overlays").glob("*/kustomization.yaml"))
PARTITIONS = {spec.name: spec.partitions for spec in ALL_TOPICS}
# the consumer-group topics that bound each service's useful replicas
BOUNDED_BY = {"registry": "gravity.rc.raw.v1", "fanout": "gravity.sms.inbound.v1"}
# the oldest Kubernetes release the manifests promise to run on; its API schemas are the ones checked
KUBERNETES_VERSION = "1.30.0"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def _base() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())
    return [
        doc for resource in kustomization["resources"] for doc in _documents(KUBERNETES / "base" / resource)
    ]


def _of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _render(overlay: Path) -> list[dict[str, Any]]:
    if kubectl := shutil.which("kubectl"):
        command = [kubectl, "kustomize", str(overlay)]
    elif kustomize := shutil.which("kustomize"):
        command = [kustomize, "build", str(overlay)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed; the base's own checks still ran")
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_every_manifest_parses_and_every_kustomization_resource_exists() -> None:
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        for doc in _documents(path):
            assert {"apiVersion", "kind"} <= doc.keys(), path
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for resource in spec.get("resources", []):
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource}"
        for generator in spec.get("configMapGenerator", []):
            for env in generator.get("envs", []):
                assert (kustomization.parent / env).is_file(), f"{kustomization}: {env}"


def _check_deployment(name: str, deployment: dict[str, Any], port: int) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30, name
    assert pod["automountServiceAccountToken"] is False, name
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["runAsUser"] == 65534, name
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}], name
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
    # endpoints drain before SIGTERM
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep", name
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys(), (name, kind)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False, name
    assert security["readOnlyRootFilesystem"] is True, name
    assert security["capabilities"]["drop"] == ["ALL"], name
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"  # noqa: S108 - in the pod


def test_base_deployments_are_probed_bounded_and_locked_down(service_ports: dict[str, int]) -> None:
    docs = _base()
    deployments = _of_kind(docs, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        _check_deployment(name, deployment, service_ports[name])
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].split(":")[0] == f"gravity-{name}", name
    services = _of_kind(docs, "Service")
    budgets = _of_kind(docs, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert services[name]["spec"]["selector"].items() <= labels.items(), name
        assert services[name]["spec"]["ports"][0]["port"] == service_ports[name], name
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), name


def test_replica_comments_state_the_partitions_that_bound_them() -> None:
    """Every "topic (N" in a Deployment's file names the topic's real partition count."""
    for name in SERVICES:
        text = (KUBERNETES / "base" / f"{name}.yaml").read_text()
        stated = re.findall(r"(gravity\.[a-z.-]+\.v\d+) \((\d+)", text)
        assert "Replicas:" in text, f"{name}.yaml does not say what bounds its replicas"
        assert {topic: int(n) for topic, n in stated} == {topic: PARTITIONS[topic] for topic, _ in stated}, (
            name
        )
        if name in BOUNDED_BY:
            assert f"{BOUNDED_BY[name]} ({PARTITIONS[BOUNDED_BY[name]]}" in text, name


def test_secret_template_names_every_key_the_pods_read() -> None:
    (secret,) = _documents(KUBERNETES / "base" / "secret.example.yaml")
    assert set(secret["stringData"].values()) == {""}, "the template carries no values"
    names = {"secret.example.yaml"} & set(
        yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())["resources"]
    )
    assert not names, "applying the base must not overwrite the real Secret"
    referenced = {
        (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for doc in _base()
        if doc["kind"] in ("Deployment", "Job")
        for container in doc["spec"]["template"]["spec"]["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert referenced == {(secret["metadata"]["name"], key) for key in secret["stringData"]}


def test_ingress_routes_as_the_contract_says() -> None:
    ingresses = _of_kind(_base(), "Ingress")
    routes = {
        (path["path"], path["pathType"]): (name, path["backend"]["service"]["name"])
        for name, ingress in ingresses.items()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert {route: service for route, (_, service) in routes.items()} == {
        ("/v1/webhooks/ringcentral", "Exact"): "ingest",
        ("/v1/ws", "Exact"): "realtime",
        ("/v1", "Prefix"): "registry",
    }
    websocket = ingresses[routes[("/v1/ws", "Exact")][0]]["metadata"]["annotations"]
    assert int(websocket["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert websocket["nginx.ingress.kubernetes.io/enable-access-log"] == "false", "?token= would be logged"
    api = ingresses[routes[("/v1", "Prefix")][0]]["metadata"]["annotations"]
    assert api["nginx.ingress.kubernetes.io/proxy-body-size"] == "2m"


def test_topics_job_runs_the_registry_image() -> None:
    (job,) = _of_kind(_base(), "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("gravity-registry:")
    assert container["command"] == ["gravity-registry", "topics"]
    from gravity_registry.__main__ import _parser  # the image's command is the registry's own CLI

    assert _parser().parse_args(container["command"][1:]).command == "topics"
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[o.name for o in OVERLAYS])
def test_overlay_renders_with_every_check_still_holding(overlay: Path, service_ports: dict[str, int]) -> None:
    docs = _render(overlay)
    namespaces = {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces
    deployments = _of_kind(docs, "Deployment")
    for name, deployment in deployments.items():
        _check_deployment(name, deployment, service_ports[name])
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        # the overlay says which image to run
        assert "/" in container["image"], (name, container["image"])
        replicas = deployment["spec"]["replicas"]
        if name in BOUNDED_BY:
            assert replicas <= PARTITIONS[BOUNDED_BY[name]], f"{name}: replicas beyond partitions sit idle"
    # the generated ConfigMap's hashed name reached every pod
    (config,) = _of_kind(docs, "ConfigMap")
    assert re.fullmatch(r"gravity-config-[a-z0-9]+", config)
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert container["envFrom"] == [{"configMapRef": {"name": config}}]
    for doc in docs:
        # strict: a misspelt or misplaced field is an error, not silently dropped by the API server
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
