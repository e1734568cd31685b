"""Services as child processes (``python -m gravity_<service>``), for tests that run the real thing: one
copy is a :class:`Service` that can be started, killed and stopped; :func:`started` brings a set of them up
(the first one alone, since it applies the migrations) and stops them all afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from gravity_devstack.procs import spawn, stop_process
from tests.support.waits import wait_ready

__all__ = ["Service", "started"]


@dataclass
class Service:
    """One copy of a service: a child process that can be killed and started again."""

    name: str
    module: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = spawn([sys.executable, "-m", self.module], env=self.env, log=self.log)

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    async def ready(self, client: httpx.AsyncClient, timeout: float = 90) -> None:
        await wait_ready(self.url, client=client, proc=self.proc, log=self.log, timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=10)


@contextlib.asynccontextmanager
async def started(services: dict[str, Service], first: str) -> AsyncIterator[dict[str, Service]]:
    """Start ``first`` and wait until it is ready (a registry applies the migrations the others need),
    then start the rest and wait for each; stop every one on the way out, whatever happened."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            services[first].start()
            await services[first].ready(client)
            for service in services.values():
                if service.proc is None:
                    service.start()
            for service in services.values():
                await service.ready(client)
        yield services
    finally:
        for service in services.values():
            service.stop()
