"""Repack the durable development broker: the same records in few, large batches.

The embedded broker (Tansu, S3 engine) stores every produce request as one object and lists all objects of
a partition on each fetch, so a partition's fetch cost grows with its batch count (about 30 µs a batch on
SeaweedFS) and, once the listing outlasts the fetch's wait, the fetch answers nothing. The services produce
small batches, so a ``.data/`` used for months would slow down and then stall. It has no retention, no
compaction and no DeleteRecords to shrink a partition in place.

A repack copies the cluster into a fresh cluster id on the same S3 store, with the stack stopped:
- every partition of an ordinary topic, record by record in batches of ``BATCH_RECORDS``, at the same
  offsets (Tansu assigns offsets contiguously from 0 and never removes any), with keys, values, headers and
  timestamps kept. The old records are read from their objects (each a Kafka record batch named by its
  base offset), not through a broker: a listing and one GET an object, several at once, where a fetch
  through the broker lists the whole partition again and once sat idle for minutes on an ordinary one;
- compacted change streams (``cleanup.policy=compact``) reduced to the latest record per key, in the order
  of those records; their readers replay them from the beginning and commit no offsets;
- the consumer groups' state and committed offsets, object by object (offsets on compacted topics are left
  out: they name positions that no longer exist).

Only when every ordinary partition of the copy has the original's high watermark does the stack switch to
the new cluster id (``.data/broker-cluster``) and delete the old cluster's objects. A repack that fails
part-way leaves the old cluster in use and untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.record.memory_records import MemoryRecords

from gravity_devstack.kafka import TansuBroker
from gravity_devstack.s3 import Bucket

__all__ = [
    "BATCH_RECORDS",
    "DEFAULT_CLUSTER",
    "PartitionSize",
    "RepackError",
    "RepackReport",
    "current_cluster",
    "measure",
    "repack",
    "repack_threshold",
]

log = logging.getLogger(__name__)

DEFAULT_CLUSTER = "tansu_cluster"
"""The broker's own default cluster id: a ``.data/`` that was never repacked uses it."""
CLUSTER_FILE = "broker-cluster"
BATCH_RECORDS = 1000
"""Records per batch in the copy: 50,000 messages become 50 objects to list."""
DEFAULT_THRESHOLD = 2000
"""Batches in one partition that trigger a repack at start: listing 2,000 objects costs about 60 ms on
SeaweedFS, already a visible part of a webhook's latency; 20,000 cost 15 s per fetch."""
READERS = 8
"""Objects read at once."""


class RepackError(RuntimeError):
    """The copy is not faithful (offsets not contiguous, a partition short): the old cluster stays in use."""


@dataclass(frozen=True, slots=True)
class Record:
    """One stored record, as a repack copies it."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class PartitionSize:
    """A partition at or past the threshold: its high watermark and (counted up to the threshold) batches."""

    topic: str
    partition: int
    high: int
    batches: int


@dataclass
class RepackReport:
    """What a repack did."""

    old_cluster: str
    new_cluster: str
    over_threshold: list[PartitionSize]
    records_copied: int = 0
    keys_kept: int = 0
    groups_copied: int = 0
    objects_deleted: int = 0
    seconds: float = 0.0
    partitions: dict[str, int] = field(default_factory=dict)


def repack_threshold() -> int:
    """``GRAVITY_DEV_REPACK_THRESHOLD`` (batches in one partition), or the default."""
    return int(os.environ.get("GRAVITY_DEV_REPACK_THRESHOLD", DEFAULT_THRESHOLD))


def current_cluster(data_dir: Path) -> str:
    """The cluster id the durable broker of ``data_dir`` serves."""
    path = data_dir / CLUSTER_FILE
    return path.read_text().strip() if path.exists() else DEFAULT_CLUSTER


def _set_cluster(data_dir: Path, cluster: str) -> None:
    tmp = data_dir / f"{CLUSTER_FILE}.tmp"
    tmp.write_text(cluster + "\n")
    os.replace(tmp, data_dir / CLUSTER_FILE)  # atomic: the old id or the new, never half of one


def _partition_prefix(cluster: str, topic: str, partition: int) -> str:
    return f"clusters/{cluster}/topics/{topic}/partitions/{partition:010d}/"


def _topics(bucket: Bucket, cluster: str) -> dict[str, dict[str, Any]]:
    meta = bucket.get_json(f"clusters/{cluster}/meta.json") or {}
    return {name: entry["topic"] for name, entry in (meta.get("topics") or {}).items()}


def _configs(topic: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["value"] for c in topic.get("configs") or [] if c.get("value") is not None}


def _compacted(topic: dict[str, Any]) -> bool:
    return "compact" in _configs(topic).get("cleanup.policy", "")


def _high(bucket: Bucket, cluster: str, topic: str, partition: int) -> int:
    mark = bucket.get_json(_partition_prefix(cluster, topic, partition) + "watermark.json") or {}
    return int(mark.get("high") or 0)


def measure(bucket: Bucket, cluster: str, *, threshold: int) -> list[PartitionSize]:
    """The partitions of ``cluster`` holding ``threshold`` batches or more, read from S3 (one small object
    per partition, and a listing only where the high watermark allows that many batches)."""
    found: list[PartitionSize] = []
    for name, topic in sorted(_topics(bucket, cluster).items()):
        for p in range(int(topic["num_partitions"])):
            high = _high(bucket, cluster, name, p)
            if high < threshold:
                continue
            prefix = _partition_prefix(cluster, name, p) + "records/"
            batches = sum(1 for _ in bucket.keys(prefix, limit=threshold))
            if batches >= threshold:
                found.append(PartitionSize(name, p, high, batches))
    return found


def repack(
    data_dir: Path,
    s3_endpoint: str,
    *,
    threshold: int | None = None,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> RepackReport | None:
    """Repack the durable broker of ``data_dir`` when a partition has ``threshold`` batches or more (or
    always, with ``force``); ``None`` when nothing needed it. The broker must not be running."""
    limit = repack_threshold() if threshold is None else threshold
    bucket = Bucket(s3_endpoint)
    try:
        old = current_cluster(data_dir)
        over = measure(bucket, old, threshold=limit)
        if not over and not force:
            return None
        new = f"gravity-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        report = RepackReport(old, new, over)
        for size in over:
            say(f"repacking the broker: {size.topic}[{size.partition}] holds {size.batches}+ batches")
        started = time.monotonic()
        topics = _topics(bucket, old)
        target = TansuBroker(log=data_dir / "repack" / "target.log", s3_endpoint=s3_endpoint, cluster_id=new)
        try:
            asyncio.run(_copy(target, topics, bucket, old, report))
        finally:
            target.stop()
        for name, topic in topics.items():
            if _compacted(topic):
                continue
            for p in range(int(topic["num_partitions"])):
                want, got = _high(bucket, old, name, p), _high(bucket, new, name, p)
                if want != got:
                    raise RepackError(f"{name}[{p}]: the copy ends at {got}, the original at {want}")
        report.groups_copied = _copy_groups(bucket, old, new, topics)
        _set_cluster(data_dir, new)
        stale = list(bucket.keys(f"clusters/{old}/"))
        bucket.delete(stale)
        report.objects_deleted = len(stale)
        report.seconds = round(time.monotonic() - started, 1)
        say(
            f"repacked in {report.seconds} s: {report.records_copied} records copied, "
            f"{report.keys_kept} change-stream keys kept, {report.groups_copied} group objects, "
            f"{report.objects_deleted} old objects deleted"
        )
        return report
    finally:
        bucket.close()


async def _copy(
    target: TansuBroker,
    topics: dict[str, dict[str, Any]],
    bucket: Bucket,
    old: str,
    report: RepackReport,
) -> None:
    await target.wait_ready()
    admin = AIOKafkaAdminClient(bootstrap_servers=target.bootstrap_servers, client_id="gravity-repack")
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=int(t["num_partitions"]),
                    replication_factor=1,
                    topic_configs=_configs(t),
                )
                for name, t in topics.items()
            ]
        )
    finally:
        await admin.close()
    writer = AIOKafkaProducer(
        bootstrap_servers=target.bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        max_batch_size=16 * 1024 * 1024,
        max_request_size=32 * 1024 * 1024,
        request_timeout_ms=60_000,
    )
    await writer.start()
    try:
        await _wait_for_topics(writer, topics)
        with ThreadPoolExecutor(READERS, thread_name_prefix="repack-read") as pool:
            for name, topic in sorted(topics.items()):
                for p in range(int(topic["num_partitions"])):
                    tp = TopicPartition(name, p)
                    high = _high(bucket, old, name, p)
                    if high == 0:
                        continue
                    records = await asyncio.to_thread(
                        _read, bucket, pool, old, tp, high, contiguous=not _compacted(topic)
                    )
                    if _compacted(topic):
                        latest: dict[bytes | None, Record] = {}
                        for r in records:
                            latest.pop(r.key, None)  # re-inserted last: the order of the latest records
                            latest[r.key] = r
                        records = list(latest.values())
                        report.keys_kept += len(records)
                    else:
                        report.records_copied += len(records)
                    await _write(writer, tp, records)
                    report.partitions[f"{name}[{p}]"] = len(records)
    finally:
        await writer.stop()


async def _wait_for_topics(producer: AIOKafkaProducer, topics: dict[str, dict[str, Any]]) -> None:
    deadline = time.monotonic() + 60
    for name in topics:
        while not (await producer.partitions_for(name)):
            if time.monotonic() > deadline:
                raise RepackError(f"topic {name} did not appear on the new cluster")
            await asyncio.sleep(0.1)


def _read(
    bucket: Bucket, pool: ThreadPoolExecutor, cluster: str, tp: TopicPartition, high: int, *, contiguous: bool
) -> list[Record]:
    """Every record of ``tp`` below ``high``, in order, from the partition's objects (each names its base
    offset); with ``contiguous``, offsets must run 0, 1, 2, … up to ``high``."""
    prefix = _partition_prefix(cluster, tp.topic, tp.partition) + "records/"
    objects = sorted((int(key[len(prefix) :].split(".", 1)[0]), key) for key in bucket.keys(prefix))
    keys = [key for _, key in objects]
    records: list[Record] = []
    for (base, _), data in zip(objects, pool.map(bucket.get_bytes, keys), strict=True):
        stored = MemoryRecords(data)
        while (batch := stored.next_batch()) is not None:
            for r in batch:
                offset = base + r.offset - batch.base_offset
                if offset < high:
                    records.append(Record(offset, r.timestamp, r.key, r.value, tuple(r.headers)))
    if contiguous:
        for expected, r in enumerate(records):
            if r.offset != expected:
                raise RepackError(f"{_name(tp)}: offset {r.offset} where {expected} was due")
        if len(records) != high:
            raise RepackError(f"{_name(tp)}: {len(records)} records stored below the high watermark {high}")
    return records


async def _write(writer: AIOKafkaProducer, tp: TopicPartition, records: list[Record]) -> None:
    """``records`` into ``tp`` in order, ``BATCH_RECORDS`` to a batch, each batch acknowledged before the
    next is sent (so the offsets follow the order)."""
    for start in range(0, len(records), BATCH_RECORDS):
        batch = writer.create_batch()
        for r in records[start : start + BATCH_RECORDS]:
            headers = list(r.headers)
            while batch.append(timestamp=r.timestamp, key=r.key, value=r.value, headers=headers) is None:
                if batch.record_count() == 0:
                    raise RepackError(f"{_name(tp)}: a record at {r.offset} fits no batch")
                await (await writer.send_batch(batch, tp.topic, partition=tp.partition))
                batch = writer.create_batch()
        if batch.record_count():
            await (await writer.send_batch(batch, tp.topic, partition=tp.partition))


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _copy_groups(bucket: Bucket, old: str, new: str, topics: dict[str, dict[str, Any]]) -> int:
    """Copy the consumer groups' objects, leaving out offsets on compacted topics."""
    compacted = {name for name, t in topics.items() if _compacted(t)}
    copied = 0
    prefix = f"clusters/{old}/groups/"
    for key in list(bucket.keys(prefix)):
        rest = key[len(prefix) :]
        parts = rest.split("/")
        if len(parts) > 3 and parts[2] == "offsets" and parts[3] in compacted:
            continue
        bucket.copy(key, f"clusters/{new}/groups/{rest}")
        copied += 1
    return copied
