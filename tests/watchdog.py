"""A backstop that ends a test run which would otherwise hang.

``pytest-timeout`` (``timeout`` in pyproject) fails a test that overruns by raising from a SIGALRM
handler. Under asyncio that exception lands inside whichever task happens to be running, which stores it
instead of failing the test, and it fires only once, so a test whose timeout was swallowed, or a teardown
that blocks after it fired, is unbounded. This plugin is the backstop: a thread that, when a test (setup,
call and teardown together) runs ``GRAVITY_TEST_BACKSTOP_GRACE_SECONDS`` past its timeout, or the whole
session passes ``GRAVITY_TEST_SUITE_BUDGET_SECONDS``, prints every thread's stack, kills this process's
descendants and exits with status 3. ``faulthandler`` dumps and exits 30 s later still, for a main thread
that holds the interpreter and never lets the watchdog's thread run.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

BACKSTOP_GRACE = float(os.environ.get("GRAVITY_TEST_BACKSTOP_GRACE_SECONDS", "60"))
"""Seconds past a test's own timeout after which the watchdog ends the run."""
SUITE_BUDGET = float(os.environ.get("GRAVITY_TEST_SUITE_BUDGET_SECONDS", "2700"))
"""The whole session's budget (45 minutes), well under CI's 90: past it the watchdog ends the run."""

EXIT_STATUS = 3


def _descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (Linux ``/proc``), children first."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Watchdog:
    """One thread that ends the run when the current test or the session runs far past its limit."""

    def __init__(self, session_budget: float, out: TextIO) -> None:
        self._out = out
        self._session_deadline = time.monotonic() + session_budget
        self._test_deadline: float | None = None
        self._test: str = ""
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="test-watchdog", daemon=True).start()

    def arm(self, test: str, seconds: float) -> None:
        with self._wake:
            self._test, self._test_deadline = test, time.monotonic() + seconds
            self._wake.notify()
        faulthandler.dump_traceback_later(seconds + 30, exit=True, file=self._out)

    def disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        with self._wake:
            self._test_deadline = None

    def _run(self) -> None:
        with self._wake:
            while True:
                deadline = min(self._session_deadline, self._test_deadline or float("inf"))
                now = time.monotonic()
                if now >= deadline:
                    break
                self._wake.wait(deadline - now)
        what = (
            f"the test session ran past its budget of {SUITE_BUDGET:.0f} s"
            if now >= self._session_deadline
            else f"{self._test} ran {BACKSTOP_GRACE:.0f} s past its timeout"
        )
        self._out.write(f"\n\nWATCHDOG: {what}; stacks of every thread follow, then the run ends.\n")
        self._out.flush()
        faulthandler.dump_traceback(file=self._out, all_threads=True)
        for pid in reversed(_descendants(os.getpid())):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self._out.flush()
        os._exit(EXIT_STATUS)


_WATCHDOG: Watchdog | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the watchdog, writing to the terminal's own stderr: the one pytest captures is a file that
    an exiting process never prints."""
    global _WATCHDOG
    capture = session.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            fd = os.dup(2)
    else:
        fd = os.dup(2)
    _WATCHDOG = Watchdog(SUITE_BUDGET, os.fdopen(fd, "w"))


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 120)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Arm the watchdog for the item's setup, call and teardown (module and session teardowns run
    inside the last item's)."""
    assert _WATCHDOG is not None
    _WATCHDOG.arm(item.nodeid, _timeout_of(item) + BACKSTOP_GRACE)
    try:
        yield
    finally:
        _WATCHDOG.disarm()
