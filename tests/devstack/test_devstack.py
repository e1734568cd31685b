"""The dev stack: embedded broker and database really work, durable storage survives a restart, and
the make-run supervisor leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tests.support import eventually, free_port

from gravity_devstack.infra import Infra


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


async def _produce_and_read(bootstrap: str, topic: str, value: bytes) -> list[bytes]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    return await _read_partition(bootstrap, topic, meta.partition)


async def _read_partition(bootstrap: str, topic: str, partition: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        values: list[bytes] = []
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500)
            if not batch:
                return values
            values += [r.value for r in batch[tp] if r.value is not None]
    finally:
        await consumer.stop()


async def test_session_infra_serves_kafka_and_sql(infra: Infra) -> None:
    values = await _produce_and_read(infra.kafka_bootstrap_servers, "gravity.dead-letter.v1", b"probe")
    assert b"probe" in values
    assert "GRAVITY_INGEST_RAW_PARTITIONING" not in infra.env()  # the durable broker's tuning only
    conn = await asyncpg.connect(infra.database_url)
    try:
        assert await conn.fetchval("select 40 + 2") == 42
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_durable_storage_survives_a_full_stop_and_start(tmp_path: Path) -> None:
    """What `make run` keeps in .data/: the S3-backed broker log and the PostgreSQL cluster."""
    env_backup = {
        k: os.environ.pop(k) for k in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL") if k in os.environ
    }
    script = textwrap.dedent(
        f"""
        import asyncio, asyncpg, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from gravity_devstack.infra import start_infra
        from tests.devstack.test_devstack import _produce_and_read, _read_partition
        infra = start_infra(data_dir=Path({str(tmp_path)!r}), durable=True)
        TOPIC = "gravity.dead-letter.v1"
        async def main(phase):
            conn = await asyncpg.connect(infra.database_url)
            if phase == "write":
                await conn.execute("create table kept(v text)")
                await conn.execute("insert into kept values ('row-1')")
                values = await _produce_and_read(infra.kafka_bootstrap_servers, TOPIC, b"record-1")
            else:
                values = await _read_partition(infra.kafka_bootstrap_servers, TOPIC, 0)
            rows = [r["v"] for r in await conn.fetch("select v from kept")]
            await conn.close()
            env = infra.env()  # the durable broker's tuning reaches the services (ADR 0014)
            tuning = [env.get("KAFKA_FETCH_MAX_WAIT_MS"), env.get("GRAVITY_INGEST_RAW_PARTITIONING")]
            print("RESULT", sorted(v.decode() for v in values), rows, tuning, flush=True)
        try:
            asyncio.run(main(sys.argv[1]))
        finally:
            infra.stop()
        """  # noqa: S608 - a test script with fixed SQL
    )
    try:
        outputs = [
            subprocess.run(
                [sys.executable, "-c", script, phase], capture_output=True, text=True, timeout=200, check=True
            ).stdout
            for phase in ("write", "read")
        ]
    finally:
        os.environ.update(env_backup)
    results = [line for out in outputs for line in out.splitlines() if line.startswith("RESULT")]
    assert results == ["RESULT ['record-1'] ['row-1'] ['100', 'batch']"] * 2


def test_supervisor_ctrl_c_leaves_no_process_behind(tmp_path: Path, repo_root: Path) -> None:
    ports = [free_port(), free_port()]
    pid_files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    script = textwrap.dedent(
        f"""
        import sys
        from gravity_devstack.supervisor import ServiceSpec, Supervisor
        fake = {str(repo_root / "tests" / "devstack" / "fake_service.py")!r}
        specs = [
            ServiceSpec("alpha", [sys.executable, fake, "{ports[0]}", {str(pid_files[0])!r}], {ports[0]}),
            ServiceSpec("beta", [sys.executable, fake, "{ports[1]}", {str(pid_files[1])!r}], {ports[1]}),
        ]
        sys.exit(Supervisor(specs, {{"PATH": "/usr/bin:/bin"}}).run("STACK IS UP"))
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=repo_root
    ) as sup:
        assert sup.stdout is not None
        lines = []
        for line in sup.stdout:
            lines.append(line)
            if "STACK IS UP" in line:
                break
        assert any(line.startswith("alpha | fake service") for line in lines)
        grandchildren = [int(p.read_text()) for p in pid_files]
        assert all(_alive(pid) for pid in grandchildren)
        sup.send_signal(signal.SIGINT)
        assert sup.wait(30) == 0
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in grandchildren) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in grandchildren)


def test_supervisor_stops_everything_when_a_service_dies(tmp_path: Path, repo_root: Path) -> None:
    port = free_port()
    pid_file = tmp_path / "a.pid"
    script = textwrap.dedent(
        f"""
        import sys
        from gravity_devstack.supervisor import ServiceSpec, Supervisor
        fake = {str(repo_root / "tests" / "devstack" / "fake_service.py")!r}
        specs = [
            ServiceSpec("alpha", [sys.executable, fake, "{port}", {str(pid_file)!r}], {port}),
            ServiceSpec("crash", [sys.executable, "-c", "import sys; sys.exit(3)"], {free_port()}),
        ]
        sys.exit(Supervisor(specs, {{"PATH": "/usr/bin:/bin"}}).run("STACK IS UP"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=repo_root, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "crash exited with code 3 while starting" in done.stdout
    grandchild = int(pid_file.read_text())
    asyncio.run(eventually(lambda: not _alive(grandchild), timeout=10))
