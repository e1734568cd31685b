"""``gravity-registry topics``: create every Gravity topic explicitly, with a replication factor and
``min.insync.replicas`` fit for production, from a Kubernetes Job or a compose one-shot before the services
start (each service also creates missing topics at start, with ``KAFKA_REPLICATION_FACTOR`` and the
broker's defaults, which suits development only).

Topics that exist are left as they are: partitions and configs of a live topic are changed with the
cluster's own tools. The command reports each topic's partitions and replicas, and exits non-zero when one
has fewer replicas than asked for.
"""

from __future__ import annotations

from dataclasses import replace

from aiokafka.admin import AIOKafkaAdminClient
from pydantic import Field

from gravity_events.kafka import ensure_topics
from gravity_events.settings import KafkaSettings
from gravity_events.topics import ALL_TOPICS, TopicSpec
from gravity_service.settings import Environment

__all__ = ["TopicSettings", "provision_topics", "topic_plan"]


class TopicSettings(KafkaSettings):
    """The broker variables, ``GRAVITY_ENV`` and ``KAFKA_MIN_INSYNC_REPLICAS`` (no database needed).

    Unset, ``KAFKA_REPLICATION_FACTOR`` is 3 in production and 1 in development, and
    ``KAFKA_MIN_INSYNC_REPLICAS`` 2 in production and 1 in development, never above the replication factor.
    """

    env: Environment = Field("development", validation_alias="GRAVITY_ENV")
    kafka_min_insync_replicas: int | None = Field(None, ge=1, validation_alias="KAFKA_MIN_INSYNC_REPLICAS")


def topic_plan(
    settings: TopicSettings, *, replication_factor: int | None = None, min_insync_replicas: int | None = None
) -> tuple[int, int, tuple[TopicSpec, ...]]:
    """(replication factor, min.insync.replicas, the topics with that config) from the arguments, else the
    settings, else the environment's defaults."""
    production = settings.env == "production"
    if replication_factor is None:
        explicit = "kafka_replication_factor" in settings.model_fields_set
        replication_factor = settings.kafka_replication_factor if explicit else (3 if production else 1)
    if min_insync_replicas is None:
        min_insync_replicas = settings.kafka_min_insync_replicas or min(
            2 if production else 1, replication_factor
        )
    if replication_factor < 1 or not 1 <= min_insync_replicas <= replication_factor:
        raise ValueError(
            f"min.insync.replicas ({min_insync_replicas}) must be between 1 and the replication factor "
            f"({replication_factor})"
        )
    specs = tuple(
        replace(spec, configs={**spec.configs, "min.insync.replicas": str(min_insync_replicas)})
        for spec in ALL_TOPICS
    )
    return replication_factor, min_insync_replicas, specs


async def provision_topics(
    settings: TopicSettings, *, replication_factor: int | None = None, min_insync_replicas: int | None = None
) -> tuple[list[str], bool]:
    """Create the missing topics; return a line per topic (partitions, replicas) and whether every topic
    has at least the replication factor asked for."""
    factor, in_sync, specs = topic_plan(
        settings, replication_factor=replication_factor, min_insync_replicas=min_insync_replicas
    )
    await ensure_topics(settings.model_copy(update={"kafka_replication_factor": factor}), specs)
    admin = AIOKafkaAdminClient(**settings.client_options(), client_id="gravity-topics")
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics([s.name for s in specs])}
    finally:
        await admin.close()
    lines, fit = [], True
    for spec in specs:
        partitions = described.get(spec.name, {}).get("partitions", [])
        replicas = min((len(p.get("replicas", ())) for p in partitions), default=0)
        ok = replicas >= factor
        fit = fit and ok
        lines.append(
            f"{spec.name}: {len(partitions)} partitions (spec {spec.partitions}), {replicas} replicas"
            f"{'' if ok else f' (fewer than {factor})'}, cleanup.policy="
            f"{spec.configs.get('cleanup.policy', 'delete')}, min.insync.replicas={in_sync} for new topics"
        )
    return lines, fit
