"""House rules that hold for the whole tree: services share only libs/, never each other's code."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = ("ingest", "registry", "fanout", "realtime")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_service_imports_another_service_or_the_dev_tools(repo_root: Path) -> None:
    offenders = []
    for service in SERVICES:
        forbidden = {f"gravity_{o}" for o in SERVICES if o != service} | {"gravity_devstack"}
        for path in (repo_root / "services" / service).rglob("*.py"):
            bad = _imported_modules(path) & forbidden
            if bad:
                offenders.append(f"{path.relative_to(repo_root)} imports {sorted(bad)}")
    assert offenders == []


def test_libs_import_no_service(repo_root: Path) -> None:
    forbidden = {f"gravity_{s}" for s in SERVICES} | {"gravity_devstack"}
    offenders = [
        str(p.relative_to(repo_root))
        for p in (repo_root / "libs").rglob("*.py")
        if _imported_modules(p) & forbidden
    ]
    assert offenders == []


def test_the_rule_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from gravity_registry.db import x\nimport gravity_fanout.app\n")
    assert {"gravity_registry", "gravity_fanout"} <= _imported_modules(bad)
