"""Shared benchmark plumbing: infrastructure, service processes, load generators, percentiles."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary_ms(values: list[float]) -> str:
    """p50 / p99 / max in milliseconds."""
    return (
        f"p50 {percentile(values, 50):.1f} ms, p99 {percentile(values, 99):.1f} ms, "
        f"max {max(values, default=float('nan')):.1f} ms (n={len(values)})"
    )


def machine_facts() -> str:
    """One line about the machine the figures come from."""
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {mem}, Python {platform.python_version()}"


@contextmanager
def service(
    module: str, env: dict[str, str], port: int, *, args: list[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m module`` (or uvicorn ``args``) with ``env``; wait until it answers; stop it."""
    cmd = [sys.executable, "-m", module, *(args or [])]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}", proc)
        _profile(proc, f"{module}-{port}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _profile(proc: subprocess.Popen[bytes], name: str) -> None:
    """With ``GRAVITY_BENCH_PYSPY=<dir>``, sample ``proc`` with py-spy until it exits.

    Collapsed stacks go to ``<dir>/<name>.txt``; ``python -m bench.pyspy_top`` summarises them. Off by
    default: sampling costs CPU the figures would otherwise have.
    """
    out_dir = os.environ.get("GRAVITY_BENCH_PYSPY")
    if not out_dir:
        return
    py_spy = shutil.which("py-spy")
    command = [py_spy] if py_spy else ["uvx", "py-spy"]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    subprocess.Popen(
        [
            *command,
            "record",
            "--pid",
            str(proc.pid),
            "--format",
            "raw",
            "--rate",
            "100",
            "--nonblocking",
            "--output",
            str(Path(out_dir) / f"{name}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_http(base: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll ``/readyz`` (or ``/`` for the bare app) until 200."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        for path in ("/readyz", "/"):
            try:
                if httpx.get(base + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise TimeoutError(f"{base} did not become ready")


@dataclass
class LoadResult:
    """What a load run measured."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.seconds


async def closed_loop(
    url: str,
    make_request: Callable[[int], tuple[bytes, dict[str, str]]],
    *,
    concurrency: int,
    seconds: float,
) -> LoadResult:
    """``concurrency`` workers POST back to back for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors, counter
            while time.monotonic() < stop_at:
                counter += 1
                body, headers = make_request(counter)
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - start) * 1000)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return LoadResult(len(latencies), errors, elapsed, latencies)


async def open_loop(
    url: str,
    make_request: Callable[[int], tuple[bytes, dict[str, str]]],
    *,
    rate: float,
    seconds: float,
    on_sent: Callable[[int, float], Awaitable[None] | None] | None = None,
) -> LoadResult:
    """POST at a fixed ``rate`` (requests are started on schedule whether earlier ones finished)."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> None:
            nonlocal errors
            body, headers = make_request(i)
            start = time.perf_counter()
            if on_sent is not None:
                result = on_sent(i, time.time())
                if result is not None:
                    await result
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - start) * 1000)

        started = time.monotonic()
        tasks = []
        for i in range(total):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    return LoadResult(total, errors, elapsed, latencies)


def spread(values: list[float]) -> str:
    """Mean ± stdev, for repeated runs."""
    if len(values) < 2:
        return f"{values[0]:.0f}" if values else "n/a"
    return f"{statistics.mean(values):.0f} ± {statistics.stdev(values):.0f}"
