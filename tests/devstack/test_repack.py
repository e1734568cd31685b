"""Repacking the durable broker: the same records at the same offsets in few batches, committed group
offsets kept, change streams reduced to their latest record per key, and the old objects gone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from gravity_devstack.kafka import TansuBroker
from gravity_devstack.repack import BATCH_RECORDS, RepackError, current_cluster, measure, repack
from gravity_devstack.s3 import Bucket
from gravity_devstack.seaweed import SeaweedS3
from gravity_events import topics
from gravity_events.kafka import ensure_topics
from gravity_events.settings import KafkaSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DATA = TopicPartition(topics.SMS_INBOUND, 3)
STREAM = TopicPartition(topics.SUBSCRIPTIONS, 0)
RECORDS = 1_200  # more than one repacked batch
COMMITTED = 700
GROUP = "repack-test-group"


@pytest.fixture
def seaweed(tmp_path: Path) -> Iterator[SeaweedS3]:
    s3 = SeaweedS3(tmp_path / "seaweedfs")
    try:
        yield s3
    finally:
        s3.stop()


def _broker(data_dir: Path, s3: SeaweedS3) -> TansuBroker:
    return TansuBroker(
        log=data_dir / "tansu.log", s3_endpoint=s3.endpoint, cluster_id=current_cluster(data_dir)
    )


def _batches(s3: SeaweedS3, cluster: str, tp: TopicPartition) -> int:
    bucket = Bucket(s3.endpoint)
    try:
        prefix = f"clusters/{cluster}/topics/{tp.topic}/partitions/{tp.partition:010d}/records/"
        return sum(1 for _ in bucket.keys(prefix))
    finally:
        bucket.close()


async def _fill(bootstrap: str) -> None:
    """``RECORDS`` single-record batches in one partition, a change stream with repeated keys, and a
    group that committed part-way."""
    await ensure_topics(KafkaSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_ENABLE_IDEMPOTENCE=False))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for i in range(RECORDS):
            await producer.send_and_wait(
                DATA.topic,
                f"v{i}".encode(),
                key=b"tenant",
                partition=DATA.partition,
                headers=[("h", b"%d" % i)],
            )
        for key, value in [(b"a", b"a1"), (b"b", b"b1"), (b"a", b"a2"), (b"c", b"c1"), (b"b", b"b2")]:
            await producer.send_and_wait(STREAM.topic, value, key=key, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([DATA])
        await consumer.commit({DATA: OffsetAndMetadata(COMMITTED, "")})
    finally:
        await consumer.stop()


async def _filled(data_dir: Path, s3: SeaweedS3) -> str:
    """Fill a fresh durable broker (see :func:`_fill`), stop it; its cluster id."""
    broker = _broker(data_dir, s3)
    try:
        await broker.wait_ready()
        await _fill(broker.bootstrap_servers)
    finally:
        broker.stop()
    return current_cluster(data_dir)


async def _read_all(
    consumer: AIOKafkaConsumer, tp: TopicPartition, count: int
) -> list[tuple[int, bytes, bytes]]:
    got: list[tuple[int, bytes, bytes]] = []
    while len(got) < count:
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        if not batch:
            break
        got += [(r.offset, r.key or b"", r.value or b"") for r in batch[tp]]
    return got


async def test_repack_keeps_offsets_groups_and_latest_keys(tmp_path: Path, seaweed: SeaweedS3) -> None:
    old = await _filled(tmp_path, seaweed)
    assert _batches(seaweed, old, DATA) == RECORDS

    report = await asyncio.to_thread(repack, tmp_path, seaweed.endpoint, threshold=1_000, say=lambda _: None)

    assert report is not None
    new = current_cluster(tmp_path)
    assert new != old and report.new_cluster == new
    assert [(s.topic, s.partition) for s in report.over_threshold] == [(DATA.topic, DATA.partition)]
    assert report.records_copied == RECORDS and report.keys_kept == 3
    assert _batches(seaweed, new, DATA) == -(-RECORDS // BATCH_RECORDS)
    bucket = Bucket(seaweed.endpoint)
    try:
        assert list(bucket.keys(f"clusters/{old}/")) == [], "the old cluster's objects are deleted"
        assert measure(bucket, new, threshold=1_000) == [], "a repacked cluster needs no repack"
    finally:
        bucket.close()
    again = await asyncio.to_thread(repack, tmp_path, seaweed.endpoint, threshold=1_000, say=lambda _: None)
    assert again is None

    broker = _broker(tmp_path, seaweed)
    try:
        await broker.wait_ready()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers, group_id=GROUP, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([DATA, STREAM])
            assert await consumer.committed(DATA) == COMMITTED, "the group continues where it was"
            rest = await _read_all(consumer, DATA, RECORDS - COMMITTED)
            assert rest == [(i, b"tenant", f"v{i}".encode()) for i in range(COMMITTED, RECORDS)]
            consumer.seek(STREAM, 0)
            stream = await _read_all(consumer, STREAM, 3)
            assert [(k, v) for _, k, v in stream] == [(b"a", b"a2"), (b"c", b"c1"), (b"b", b"b2")]
            consumer.seek(DATA, COMMITTED)
            [first, *_] = (await consumer.getmany(DATA, timeout_ms=10_000))[DATA]
            assert first.headers == (("h", b"%d" % COMMITTED),), "headers are kept"
        finally:
            await consumer.stop()
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            meta = await producer.send_and_wait(DATA.topic, b"next", key=b"tenant", partition=DATA.partition)
        finally:
            await producer.stop()
        assert meta.offset == RECORDS, "new records follow the copied offsets"
    finally:
        broker.stop()


async def test_a_partition_missing_a_batch_is_not_repacked(tmp_path: Path, seaweed: SeaweedS3) -> None:
    old = await _filled(tmp_path, seaweed)
    prefix = f"clusters/{old}/topics/{DATA.topic}/partitions/{DATA.partition:010d}/records/"
    bucket = Bucket(seaweed.endpoint)
    try:
        keys = list(bucket.keys(prefix))
        bucket.delete([keys[500]])
        with pytest.raises(RepackError, match=r"offset 501 where 500 was due"):
            await asyncio.to_thread(repack, tmp_path, seaweed.endpoint, threshold=1_000, say=lambda _: None)
        assert current_cluster(tmp_path) == old, "the old cluster stays in use"
        assert len(list(bucket.keys(prefix))) == RECORDS - 1, "and untouched"
    finally:
        bucket.close()


def test_repack_refuses_a_data_folder_in_use(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from gravity_devstack.__main__ import _hold; import pathlib, time; "
            f"_hold(pathlib.Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        done = subprocess.run(
            [sys.executable, "-m", "gravity_devstack", "repack", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert done.returncode == 2
    assert "in use by another gravity-dev" in done.stderr
