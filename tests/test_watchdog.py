"""The suite's backstop: a test that hangs past its timeout ends the run instead of hanging it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.watchdog import EXIT_STATUS

# pytest-timeout's SIGALRM exception is stored in whichever task runs when it fires: with a task that is
# always busy, the test below never fails by itself, and only the watchdog can end it.
SWALLOWED_TIMEOUT = """
import asyncio
import pytest

@pytest.mark.timeout(1)
async def test_hangs_with_a_busy_task():
    async def spin():
        while True:
            sum(range(20_000))
            await asyncio.sleep(0)

    spinner = asyncio.create_task(spin())
    await asyncio.Event().wait()
"""


def _run_pytest(tmp_path: Path, source: str, *, env: dict[str, str], limit: float) -> tuple[int, str, float]:
    (tmp_path / "test_hang.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.watchdog",
            "-p",
            "no:cacheprovider",
            "-q",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env},
        capture_output=True,
        text=True,
        timeout=limit,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@pytest.mark.timeout(90)
def test_a_test_whose_timeout_is_swallowed_ends_the_run(tmp_path: Path) -> None:
    status, output, took = _run_pytest(
        tmp_path, SWALLOWED_TIMEOUT, env={"GRAVITY_TEST_BACKSTOP_GRACE_SECONDS": "2"}, limit=60
    )
    assert status == EXIT_STATUS, output
    assert "WATCHDOG: " in output and "ran 2 s past its timeout" in output, output
    assert "test_hangs_with_a_busy_task" in output
    assert "most recent call first" in output and "run_until_complete" in output, "the stacks are printed"
    assert took < 30, took


@pytest.mark.timeout(90)
def test_a_session_past_its_budget_ends_the_run(tmp_path: Path) -> None:
    source = "import time\n\ndef test_slow():\n    time.sleep(30)\n"
    status, output, took = _run_pytest(
        tmp_path, source, env={"GRAVITY_TEST_SUITE_BUDGET_SECONDS": "3"}, limit=60
    )
    assert status == EXIT_STATUS, output
    assert "ran past its budget of 3 s" in output, output
    assert took < 25, took
