"""``serve()`` in a real process: a supervised task that dies takes the process down with status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.support.servers import free_port
from tests.support.waits import eventually, wait_ready

from gravity_service import TASK_FAILURE

SERVICE = Path(__file__).with_name("dying_service.py")


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_dead_supervised_task_makes_the_process_exit_non_zero(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(SERVICE), str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, proc=proc, log=log, timeout=30)
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            assert (await client.post("/break")).status_code == 202
        await eventually(lambda: proc.poll() is not None, timeout=30)  # shuts down, then exits
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert proc.returncode == TASK_FAILURE, output
    assert "supervised task 'consumer' failed" in output
    assert "Traceback (most recent call last)" in output and "RuntimeError: the consumer loop broke" in output
    assert "cleaned up" in output  # uvicorn shut down properly: the lifespan's cleanup ran
