"""``gravity-registry`` / ``python -m gravity_registry``: serve (the default), or a one-shot command.

- ``gravity-registry [serve]``: the registry API and its background work.
- ``gravity-registry republish [--prune]``: queue the current state of every subscription, API key and app
  from PostgreSQL onto the change streams and publish it (after the broker lost them); ``--prune`` also
  removes keys the database does not know. Exit status 0 when published, 1 when the outbox did not empty.
- ``gravity-registry topics [--replication-factor N] [--min-insync-replicas M]``: create every topic
  explicitly (a Kubernetes Job or compose one-shot). Exit status 1 when a topic has fewer replicas than
  asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gravity_events import logs
from gravity_registry.provision import TopicSettings, provision_topics, topic_plan

if TYPE_CHECKING:
    from gravity_registry.settings import Settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gravity-registry", description="The Gravity SMS registry.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API (the default)")
    again = commands.add_parser(
        "republish", help="republish subscriptions, API keys and apps from the database onto the broker"
    )
    again.add_argument(
        "--prune",
        action="store_true",
        help="also publish removals for keys live on the broker that the database does not know",
    )
    again.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the broker")
    provision = commands.add_parser("topics", help="create every topic (a Kubernetes Job / compose one-shot)")
    provision.add_argument("--replication-factor", type=int, default=None)
    provision.add_argument("--min-insync-replicas", type=int, default=None)
    return parser


async def _republish(settings: Settings, *, prune: bool, timeout: float) -> int:
    import asyncpg

    from gravity_events.kafka import ensure_topics, make_producer
    from gravity_registry.handlers import OutboxPublisher, drain_outbox, republish

    pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
    try:
        await ensure_topics(settings, create=not settings.production)
        producer = make_producer(settings, client_id="gravity-registry-republish")
        await producer.start()
        try:
            states = await republish(pool, settings, mode="force", prune=prune, read_timeout=timeout)
            if states is None:
                print("another registry copy is republishing; nothing done", file=sys.stderr)
                return 1
            for s in states:
                print(
                    f"{s.topic}: {s.in_database} in the database, {s.on_topic} live on the topic, "
                    f"{s.missing} missing, {s.unknown} unknown; "
                    f"republished {s.republished}, removed {s.removed}"
                )
            outbox = OutboxPublisher(pool, producer, sweep_seconds=settings.outbox_sweep_seconds)
            if not await drain_outbox(pool, outbox, timeout=timeout):
                print(
                    "the outbox did not empty in time; a running registry publishes the rest", file=sys.stderr
                )
                return 1
            return 0
        finally:
            await producer.stop()
    finally:
        await pool.close()


async def _topics(replication_factor: int | None, min_insync_replicas: int | None) -> int:
    settings = TopicSettings()
    lines, fit = await provision_topics(
        settings, replication_factor=replication_factor, min_insync_replicas=min_insync_replicas
    )
    for line in lines:
        print(line)
    return 0 if fit else 1


def main(argv: Sequence[str] | None = None) -> None:
    """Read settings once (refusing weak production configuration) and run the command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "topics":
        logs.configure("info")
        try:
            topic_plan(
                TopicSettings(),
                replication_factor=args.replication_factor,
                min_insync_replicas=args.min_insync_replicas,
            )
        except ValueError as exc:
            parser.error(str(exc))
        sys.exit(asyncio.run(_topics(args.replication_factor, args.min_insync_replicas)))
    # the app and its dependencies are imported only when needed: `topics` starts in a fraction of the time
    from gravity_registry.app import create_app
    from gravity_registry.settings import Settings
    from gravity_service.serve import serve
    from gravity_service.telemetry import setup

    settings = Settings()
    setup(settings, service="registry")
    if args.command == "republish":
        sys.exit(asyncio.run(_republish(settings, prune=args.prune, timeout=args.timeout)))
    serve(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
