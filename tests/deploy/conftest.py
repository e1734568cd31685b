"""What the deployment tests share: the services and their ports as the code defines them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SERVICES = ("registry", "ingest", "realtime", "fanout")


@pytest.fixture(scope="session")
def service_ports(repo_root: Path) -> dict[str, int]:
    """Each service's ``GRAVITY_<SERVICE>_PORT`` default, read from its settings.py."""
    ports = {}
    for service in SERVICES:
        path = repo_root / "services" / service / "src" / f"gravity_{service}" / "settings.py"
        match = re.search(
            rf'Field\((\d+)[^)]*validation_alias="GRAVITY_{service.upper()}_PORT"', path.read_text()
        )
        assert match, f"{service}: no GRAVITY_{service.upper()}_PORT default in {path}"
        ports[service] = int(match.group(1))
    return ports
