"""``BatchPartitioner``: one partition a moment, every partition over time (ADR 0014)."""

from __future__ import annotations

from gravity_events.kafka import BatchPartitioner

PARTITIONS = list(range(12))


def test_records_of_one_moment_share_a_partition() -> None:
    partitioner = BatchPartitioner(period=3600.0)
    picks = {partitioner(str(i).encode(), PARTITIONS, PARTITIONS) for i in range(100)}
    assert len(picks) == 1


def test_partitions_turn_once_a_moment_is_over() -> None:
    partitioner = BatchPartitioner(period=0.0)  # every call starts a new moment
    picks = [partitioner(b"k", PARTITIONS, PARTITIONS) for _ in range(12)]
    assert sorted(picks) == PARTITIONS


def test_only_available_partitions_are_chosen() -> None:
    partitioner = BatchPartitioner(period=0.0)
    picks = {partitioner(None, [0, 1, 2, 3], [1, 3]) for _ in range(10)}
    assert picks == {1, 3}
