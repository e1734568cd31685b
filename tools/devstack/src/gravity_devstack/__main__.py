"""``gravity-dev``: developer commands.

- ``gravity-dev run``: what ``make run`` does (see :mod:`gravity_devstack.supervisor`);
- ``gravity-dev infra``: only the broker and database, with the variables to reach them;
- ``gravity-dev repack``: repack the durable broker's partitions now (``run`` and ``infra`` do it at start
  when a partition has grown past ``GRAVITY_DEV_REPACK_THRESHOLD`` batches; see
  :mod:`gravity_devstack.repack`).

One command at a time holds a data folder (a lock file in it): two brokers on one store would corrupt it.
"""

from __future__ import annotations

import argparse
import fcntl
import os
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


def _hold(data_dir: Path) -> int:
    """Lock ``data_dir`` for this process (released when it exits); exit 2 if another one holds it."""
    fd = os.open(data_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"{data_dir} is in use by another gravity-dev (make run?): stop it first", file=sys.stderr)
        raise SystemExit(2) from None
    return fd


def _repack(data_dir: Path, *, force: bool, threshold: int | None) -> int:
    from gravity_devstack.repack import repack
    from gravity_devstack.seaweed import SeaweedS3

    seaweed = SeaweedS3(data_dir / "seaweedfs")
    try:
        report = repack(data_dir, seaweed.endpoint, force=force, threshold=threshold)
    finally:
        seaweed.stop()
    if report is None:
        print("no partition needs a repack (--force repacks anyway)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="gravity-dev")
    parser.add_argument("command", choices=["run", "infra", "repack"])
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    parser.add_argument("--force", action="store_true", help="repack: even below the threshold")
    parser.add_argument("--threshold", type=int, default=None, help="repack: batches in one partition")
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _hold(data_dir)
    if args.command == "repack":
        return _repack(data_dir, force=args.force, threshold=args.threshold)
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
