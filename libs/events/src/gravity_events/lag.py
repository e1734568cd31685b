"""Consumer lag: records between a consumer's position and its partitions' high watermarks."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONSUMER_LAG", "ConsumerLag", "StoppableConsumer", "assigned_positions", "partition_lag"]


def partition_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Records behind the end of each assigned partition: the last fetch response's high watermark minus
    the consumer's position (the next offset it hands out).

    The high watermark comes with every fetch response, so it is right on the embedded broker too, whose
    ListOffsets "latest" answer is not. A partition not fetched yet, or whose position is still being
    reset, has no entry. Synchronous and network-free, so it can run at scrape time; the position is read
    from aiokafka's assignment state because its public ``position()`` is a coroutine that may wait.
    """
    return {
        tp: max(int(state.highwater) - int(state.position), 0)
        for tp, state in _positioned(consumer)
        if state.highwater is not None
    }


def assigned_positions(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """The next offset the consumer hands out, per assigned partition whose position is set (synchronous,
    like :func:`partition_lag`)."""
    return {tp: int(state.position) for tp, state in _positioned(consumer)}


def _positioned(consumer: AIOKafkaConsumer) -> list[tuple[TopicPartition, Any]]:
    """aiokafka's state of each assigned partition that has a valid position."""
    subscription = getattr(consumer, "_subscription", None)
    assignment = getattr(getattr(subscription, "subscription", None), "assignment", None)
    if assignment is None:
        return []
    states = ((tp, assignment.state_value(tp)) for tp in assignment.tps)
    return [(tp, state) for tp, state in states if state is not None and state.has_valid_position]


class _Lagging(Protocol):
    @property
    def lag_group(self) -> str: ...

    def lag(self) -> dict[TopicPartition, int]: ...


class ConsumerLag(Collector):
    """``gravity_kafka_consumer_lag{group,topic,partition}``: records behind the end, per partition, of
    every consumer given to :meth:`track`, computed when the registry is scraped.

    Register one on a service's Prometheus registry (``gravity_service.metrics.ServiceMetrics`` does) and
    track each :class:`EventConsumer` and :class:`ChangeStreamReader` the lifespan starts. Consumers are
    held weakly, and a closed one reports nothing, so a lifespan that ends needs no untracking.
    """

    def __init__(self) -> None:
        self._tracked: weakref.WeakSet[_Lagging] = weakref.WeakSet()

    def track(self, consumer: _Lagging) -> None:
        """Report ``consumer``'s lag from now on, labelled with its ``lag_group``."""
        self._tracked.add(consumer)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for consumer in list(self._tracked):
            for tp, lag in sorted(consumer.lag().items()):
                family.add_metric([consumer.lag_group, tp.topic, str(tp.partition)], lag)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "gravity_kafka_consumer_lag",
            "Records between a consumer's position and the partition's high watermark.",
            labels=["group", "topic", "partition"],
        )


CONSUMER_LAG = "gravity_kafka_consumer_lag"
"""The metric :class:`ConsumerLag` exposes."""


class StoppableConsumer:
    """What Gravity's consumer loops share: a stop signal, a close, and their lag.

    Subclasses set ``_consumer`` and ``lag_group`` and run their own loop until ``_stopping`` is set.
    """

    _consumer: AIOKafkaConsumer
    lag_group: str

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._closed = False

    def stop(self) -> None:
        """Ask the loop to finish what it holds and return."""
        self._stopping.set()

    async def close(self) -> None:
        """Close the connection (a group member leaves its group)."""
        self._closed = True
        await self._consumer.stop()

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of each assigned partition (see :func:`partition_lag`); none once closed."""
        return {} if self._closed else partition_lag(self._consumer)
