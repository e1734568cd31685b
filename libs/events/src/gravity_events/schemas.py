"""Generate the committed schemas: ``python -m gravity_events.schemas [--check] [DIR]``.

One JSON Schema per topic, ``<topic>.schema.json``, and the AsyncAPI document of every topic and of the
WebSocket channel, ``asyncapi.yaml`` (:mod:`gravity_events.asyncapi`). ``--check`` exits 1 when the
committed files differ from the models (the drift tests run the same comparison).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gravity_events.asyncapi import ASYNCAPI_FILE, render_asyncapi
from gravity_events.codec import SCHEMA_VERSION, schema_adapters

__all__ = ["DEFAULT_DIR", "render_files", "render_schemas", "write_schemas"]

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render_schemas() -> dict[str, str]:
    """File name → JSON text, for every topic."""
    out: dict[str, str] = {}
    for topic, adapter in sorted(schema_adapters().items()):
        schema = adapter.json_schema(mode="serialization", by_alias=True)
        schema["$id"] = f"https://gravity-sms.dev/schemas/{topic}.schema.json"
        schema["x-schema-version"] = SCHEMA_VERSION
        schema["x-topic"] = topic
        out[f"{topic}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def render_files() -> dict[str, str]:
    """File name → text of every generated file: the JSON Schemas and the AsyncAPI document."""
    return {**render_schemas(), ASYNCAPI_FILE: render_asyncapi()}


def write_schemas(directory: Path = DEFAULT_DIR) -> None:
    """Write every generated file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_files().items():
        (directory / name).write_text(text)


def main(argv: list[str]) -> int:
    """Entry point."""
    check = "--check" in argv
    rest = [a for a in argv if a != "--check"]
    directory = Path(rest[0]) if rest else DEFAULT_DIR
    if not check:
        write_schemas(directory)
        return 0
    stale = [
        n
        for n, t in render_files().items()
        if not (directory / n).exists() or (directory / n).read_text() != t
    ]
    for name in stale:
        print(f"stale schema: {name}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
