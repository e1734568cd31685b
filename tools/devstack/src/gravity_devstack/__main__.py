"""``gravity-dev``: developer commands.

- ``gravity-dev run``: what ``make run`` does (see :mod:`gravity_devstack.supervisor`);
- ``gravity-dev infra``: only the broker and database, with the variables to reach them.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from gravity_devstack.infra import start_infra
from gravity_devstack.supervisor import Supervisor, default_services, dev_environment


def _banner(env: dict[str, str], infra_sources: str) -> str:
    def url(var: str) -> str:
        return f"http://127.0.0.1:{env[var]}"

    return "\n".join(
        [
            "",
            "Gravity SMS is running (Ctrl-C stops everything)",
            f"  registry  {url('GRAVITY_REGISTRY_PORT')}   (REST API, docs at /docs)",
            f"  ingest    {url('GRAVITY_INGEST_PORT')}   (POST /v1/webhooks/ringcentral)",
            f"  realtime  ws://127.0.0.1:{env['GRAVITY_REALTIME_PORT']}   (GET /v1/ws)",
            f"  fanout    {url('GRAVITY_FANOUT_PORT')}   (health and metrics)",
            f"  admin token: {env['GRAVITY_ADMIN_TOKEN']}",
            f"  infrastructure: {infra_sources}; data in .data/",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="gravity-dev")
    parser.add_argument("command", choices=["run", "infra"])
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    print("starting the broker and the database …", flush=True)
    infra = start_infra(data_dir=data_dir, durable=True)
    sources = f"Kafka: {infra.kafka_source}, PostgreSQL: {infra.database_source}"
    try:
        if args.command == "infra":
            for key, value in infra.env().items():
                print(f"export {key}='{value}'")
            print(f"# {sources}. Ctrl-C stops them.", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
            return 0
        env = dev_environment(data_dir, infra.env())
        return Supervisor(default_services(env), env).run(_banner(env, sources))
    finally:
        print("stopping the broker and the database …", flush=True)
        infra.stop()


if __name__ == "__main__":
    sys.exit(main())
