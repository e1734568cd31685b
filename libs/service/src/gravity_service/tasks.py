"""Background tasks a service cannot work without, and what happens when one of them dies.

A lifespan starts each long-running loop (consumers, change-stream readers, sweepers) with
:meth:`Supervisor.start` and ends them all with :meth:`Supervisor.stop`. Such a loop is meant to run
until it is stopped, so a task that raises, or returns or is cancelled while the service runs, has
*failed*: it is logged (with its traceback), readiness turns 503 (see :mod:`gravity_service.health`),
and every callback registered with :func:`on_task_failure` is told. :func:`gravity_service.serve.serve`
registers one that shuts uvicorn down and makes the process exit 1, so whatever supervises the process
(docker compose, Kubernetes, ``make run``) restarts it instead of leaving a half-working copy up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Supervisor", "on_task_failure"]

log = logging.getLogger(__name__)

FailureCallback = Callable[[str], None]
"""Called with the failed task's name, on the event loop, right after the failure was logged."""

_failure_callbacks: list[FailureCallback] = []


@contextlib.contextmanager
def on_task_failure(callback: FailureCallback) -> Iterator[None]:
    """Call ``callback(name)`` whenever a task of any :class:`Supervisor` fails, within the block.

    Process-wide on purpose: a dead supervised task means the process should go, whichever app owns it.
    Without any callback (tests that enter a lifespan directly) a failure only turns readiness 503.
    """
    _failure_callbacks.append(callback)
    try:
        yield
    finally:
        _failure_callbacks.remove(callback)


@dataclass(slots=True)
class _Entry:
    task: asyncio.Task[object]
    stop: Callable[[], object] | None


class Supervisor:
    """Owns a service's background tasks: start them by name, notice when one dies, stop them all.

    ``grace_seconds`` is how long :meth:`stop` lets tasks that have a ``stop`` callback finish on their
    own (a consumer commits what it has handled) before cancelling them.
    """

    def __init__(self, *, grace_seconds: float = 10.0) -> None:
        self.grace_seconds = grace_seconds
        self._entries: dict[str, _Entry] = {}
        self._failures: dict[str, str] = {}
        self._stopping = False

    @property
    def failures(self) -> dict[str, str]:
        """Name → what happened (``"failed"`` with the exception type, ``"returned"``, ``"cancelled"``)
        of every task that failed since the supervisor was created; empty while all is well."""
        return dict(self._failures)

    @property
    def ok(self) -> bool:
        """True while no supervised task has failed."""
        return not self._failures

    def start(
        self,
        name: str,
        coroutine: Coroutine[Any, Any, object],
        *,
        stop: Callable[[], object] | None = None,
    ) -> asyncio.Task[object]:
        """Run ``coroutine`` as the task ``name`` until :meth:`stop`.

        ``stop`` is the loop's own way to end (e.g. ``consumer.stop``, which sets its stop flag):
        :meth:`stop` calls it and waits up to ``grace_seconds`` before cancelling. Without it the task
        is cancelled straight away on shutdown. Names must be unique among running tasks.
        """
        running = self._entries.get(name)
        if running is not None and not running.task.done():
            coroutine.close()
            raise ValueError(f"a task named {name!r} is already running")
        self._stopping = False
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._entries[name] = _Entry(task, stop)
        task.add_done_callback(lambda done: self._finished(name, done))
        return task

    def _finished(self, name: str, task: asyncio.Task[object]) -> None:
        """Done callback: judge how the task ended."""
        if task.cancelled():
            if not self._stopping:
                self._fail(name, "cancelled", "supervised task %r was cancelled while the service ran")
            return
        exc = task.exception()  # retrieving it also keeps asyncio from logging it a second time
        if exc is not None:
            log.error("supervised task %r failed", name, exc_info=exc)
            self._fail(name, f"failed: {type(exc).__name__}")
        elif not self._stopping:
            self._fail(name, "returned", "supervised task %r returned while the service ran")

    def _fail(self, name: str, what: str, message: str | None = None) -> None:
        if message is not None:
            log.error(message, name)
        self._failures[name] = what
        for callback in list(_failure_callbacks):
            try:
                callback(name)
            except Exception:  # one broken callback must not keep the others from hearing of it
                log.exception("task-failure callback %r raised", callback)

    async def stop(self) -> None:
        """Stop every task: call their ``stop`` callbacks, wait up to ``grace_seconds``, cancel the rest.

        Never raises for a task: an error a task raises while stopping is logged with its traceback and
        recorded as a failure (so :func:`gravity_service.serve.serve` still exits non-zero), and a task
        that ignores cancellation is logged and left behind rather than hanging the shutdown forever.
        """
        self._stopping = True
        entries = [e for e in self._entries.values() if not e.task.done()]
        for entry in entries:
            if entry.stop is None:
                entry.task.cancel()
                continue
            try:
                entry.stop()
            except Exception:
                log.exception("stopping task %r raised; cancelling it", entry.task.get_name())
                entry.task.cancel()
        pending = {e.task for e in entries}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.grace_seconds)
        for task in pending:
            log.warning(
                "task %r did not stop within %.1f s; cancelling it", task.get_name(), self.grace_seconds
            )
            task.cancel()
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=self.grace_seconds)
            for task in stuck:
                self._fail(task.get_name(), "stuck", "task %r ignored cancellation; leaving it behind")
        # Done callbacks run on the next loop iterations; let them record how the tasks ended.
        await asyncio.sleep(0)
        self._entries.clear()
