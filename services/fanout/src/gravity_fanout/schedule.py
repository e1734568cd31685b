"""The retry schedule: when a failed attempt is tried again, and where on the retry queue it waits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from gravity_webhooks import DeliveryResult

__all__ = ["RETRY_BUCKETS", "RETRY_GROUP_HEADER", "RetryPolicy", "retry_partition"]

RETRY_GROUP_HEADER = "gravity-fanout-group"
"""Record header naming the deployment (consumer group) that scheduled a retry. Retries belong to the
deployment that scheduled them: a second deployment on the same cluster (staging, a renamed group, a
test) reads the same topic and must neither redo them nor disturb their timing."""

RETRY_BUCKETS = (10.0, 60.0, 300.0, 1200.0, 3600.0, 14400.0, 28800.0)
"""Upper bounds (seconds) of the delay buckets; bucket i is partition i of the retry topic."""


def retry_partition(delay: float, partitions: int) -> int:
    """The retry-topic partition for a retry due in ``delay`` seconds.

    Records of one partition have delays of the same order, so the partition's head is (nearly) always
    the next one due, and a long ``Retry-After`` never holds up short retries. A retry may therefore
    run late by at most its bucket's width (e.g. up to 50 s for delays between 10 s and 60 s).
    """
    bucket = next((i for i, bound in enumerate(RETRY_BUCKETS) if delay < bound), len(RETRY_BUCKETS))
    return min(bucket, partitions - 1)


@dataclass(frozen=True)
class RetryPolicy:
    """When the next attempt happens, and whether there is one."""

    schedule: Sequence[float]
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, result: DeliveryResult) -> float | None:
        """Seconds until attempt ``attempt + 1`` after attempt ``attempt`` failed; None: give up.

        ``Retry-After`` on 429/503 is honoured (never shorter than it). Any other 4xx except 408 ends
        retries: the endpoint refused this payload and the same bytes would be refused again.
        """
        status = result.status
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return None
        if attempt > len(self.schedule):
            return None
        base = self.schedule[attempt - 1]
        delay = base * (1 + self.rng.uniform(-self.jitter, self.jitter))
        if status in (429, 503) and result.retry_after is not None:
            delay = max(delay, result.retry_after)
        return delay
