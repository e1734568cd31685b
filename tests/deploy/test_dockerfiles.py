"""The service images, read from their Dockerfiles and the build context's .dockerignore (no engine here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SERVICES = ("registry", "ingest", "realtime", "fanout")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", path.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions(path):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


@pytest.mark.parametrize("service", SERVICES)
def test_dependencies_install_before_the_sources_arrive(repo_root: Path, service: str) -> None:
    dockerfile = repo_root / "services" / service / "Dockerfile"
    build, _ = _stages(dockerfile)
    copies = [(i, args) for i, (keyword, args) in enumerate(build) if keyword == "COPY"]
    syncs = [(i, args) for i, (keyword, args) in enumerate(build) if keyword == "RUN" and "uv sync" in args]
    whole_context = [args for _, args in copies if re.match(r"(--\S+\s+)*\.\s", args)]
    assert whole_context == [], "COPY . . brings the whole context, before and with everything"
    assert len(syncs) == 2, syncs
    (deps_at, deps), (app_at, app) = syncs
    assert "--frozen" in deps and "--no-install-workspace" in deps and f"--package gravity-{service}" in deps
    assert "--frozen" in app and "--no-editable" in app and f"--package gravity-{service}" in app
    assert "--no-dev" in deps and "--no-dev" in app
    before = " ".join(args for i, args in copies if i < deps_at)
    # only the lock and the workspace's pyproject.toml files come before the dependency layer
    assert "uv.lock" in before
    for i, args in copies:
        if i < deps_at:
            assert all(
                source in ("pyproject.toml", "uv.lock") or source.endswith("/pyproject.toml")
                for source in args.split()[:-1]
            ), args
    # every workspace member is declared to uv, or it refuses the lock
    members = sorted(
        str(p.relative_to(repo_root))
        for pattern in ("libs/*/pyproject.toml", "services/*/pyproject.toml", "tools/*/pyproject.toml")
        for p in repo_root.glob(pattern)
    )
    assert [m for m in members if m not in before] == []
    sources = " ".join(args for i, args in copies if deps_at < i < app_at)
    assert "libs/" in sources and f"services/{service}/" in sources


@pytest.mark.parametrize("service", SERVICES)
def test_the_runtime_stage_holds_only_the_venv_and_runs_as_nobody(
    repo_root: Path, service: str, service_ports: dict[str, int]
) -> None:
    stages = _stages(repo_root / "services" / service / "Dockerfile")
    assert len(stages) == 2, "a build stage and a runtime stage"
    build, runtime = stages
    # the venv's interpreter is a link into the base image, so both stages share it exactly
    assert build[0][1].split()[0] == runtime[0][1].split()[0]
    assert ":" in build[0][1].split()[0] and not build[0][1].split()[0].endswith(":latest")
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert copies == ["--from=build /app/.venv /app/.venv"]
    assert not [args for keyword, args in runtime if keyword == "RUN"]
    users = [args for keyword, args in runtime if keyword == "USER"]
    # numeric, so Kubernetes' runAsNonRoot can check it
    assert users == ["65534:65534"]
    assert ("EXPOSE", str(service_ports[service])) in runtime
    assert runtime[-1] == ("CMD", f'["gravity-{service}"]')
    health = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert len(health) == 1 and f"'{service_ports[service]}') + '/readyz'" in health[0]


def test_the_four_dockerfiles_are_one_recipe(repo_root: Path, service_ports: dict[str, int]) -> None:
    """Line by line, equal as written or once the service's name and port are replaced."""

    def normalised(service: str, line: str) -> str:
        return (
            line.replace(f"gravity-{service}", "gravity-SERVICE")
            .replace(f"services/{service}/", "services/SERVICE/")
            .replace(f"GRAVITY_{service.upper()}_", "GRAVITY_SERVICE_")
            .replace(str(service_ports[service]), "PORT")
        )

    texts = {s: (repo_root / "services" / s / "Dockerfile").read_text().splitlines() for s in SERVICES}
    reference = texts["registry"]
    for service, lines in texts.items():
        assert len(lines) == len(reference), service
        differing = [
            (a, b)
            for a, b in zip(reference, lines, strict=True)
            if a != b and normalised("registry", a) != normalised(service, b)
        ]
        assert differing == [], service


def test_the_build_context_leaves_out_local_state_and_secrets(repo_root: Path) -> None:
    patterns = {
        line.strip()
        for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    required = {
        ".venv",
        ".data",
        ".git",
        ".env",
        ".env.*",
        "tests",
        "bench",
        "**/__pycache__",
        "**/.pytest_cache",
    }
    assert required - patterns == set()
    # what the Dockerfiles copy must not be ignored
    assert not {"libs", "services", "uv.lock", "pyproject.toml", "tools"} & patterns
    assert not [p for p in patterns if p.startswith("!")]
    gitignore = (repo_root / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore
