"""Per-app lanes: each app's first attempts have their own bounded queue and workers.

A slow, hanging, refusing or failing endpoint fills only its own lane. A first attempt that cannot start at
once waits in the lane for at most the first-attempt window
(``GRAVITY_FANOUT_FIRST_ATTEMPT_WINDOW_SECONDS``); if no worker took it by then, or the lane is full, it is
handed to the durable retry queue as attempt 1, due now, and counts as finished. A lane that is not
delivering (its last attempt failed, or its workers have all been busy for a whole window: the app hangs)
uses the shorter failing window (``GRAVITY_FANOUT_FAILING_WINDOW_SECONDS``) instead: its jobs would end on
the retry queue anyway, and the commit point, which is what a killed copy re-sends from, stays close behind
reading (the failing window plus one write per job; ADR 0017). :meth:`Lane.hurry` ends every window at once
(the partitions are being taken away: what was read must be committed first). An attempt a worker started
and that is still under way when the window ends goes on, and a guard on the retry queue stands for it: the
retry queue makes the attempt again unless the attempt voids the guard when it ends (ADR 0015). So an app
holds the commit point of a message for at most the window, however slow it is and however long its queue
(ADR 0011), and neither other apps nor the reading of later messages are held up. (An attempt whose POST has
ended and whose outcome is still being recorded is waited for: only a slow or absent broker makes that take
long, and then no offset can be committed anyway.)

A job is either waiting (in the lane's queue), started (taken out by a worker) or handed off (taken out
by its submitter when the window ran out): each move out of the queue is one synchronous step, so a job
is never both attempted from the lane and handed off.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from gravity_events.models import SmsInbound
from gravity_events.tracing import Headers
from gravity_fanout.apps import App
from gravity_fanout.handlers import Deliverer
from gravity_fanout.settings import Settings

__all__ = ["Lane", "Lanes"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    app: App
    event: SmsInbound
    headers: Headers
    done: asyncio.Future[None]
    started: datetime | None = None
    posted: bool = False
    """The POST has ended; only the recording of its outcome may still be under way."""
    guard_id: str | None = None
    """Set once a guard for this attempt is being recorded: the attempt must void it when it ends."""

    def mark_posted(self) -> None:
        self.posted = True

    def settle(self, error: BaseException | None = None) -> None:
        """Tell the submitter how the first attempt ended (unless it stopped waiting: cancelled)."""
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class Lane:
    """One app's queue and workers: its slowness stays its own."""

    def __init__(
        self, deliverer: Deliverer, *, size: int, workers: int, window: float, failing_window: float
    ) -> None:
        self._deliverer = deliverer
        self._size = size
        self._workers = workers
        self._window = window
        self._failing_window = min(failing_window, window)
        self._failing = False
        """The last attempt that ended here failed."""
        self._saturated_at: float | None = None
        """Since when every worker is busy (None while one is free)."""
        self._cut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when :meth:`hurry` ends the windows of the jobs submitted until then."""
        self._waiting: dict[_Job, None] = {}
        """Jobs no worker has taken yet, oldest first (a dict: any one can leave in one step)."""
        self._running: dict[asyncio.Task[None], _Job] = {}
        self._closed = False

    async def submit(self, app: App, event: SmsInbound, headers: Headers = ()) -> None:
        """Return when the first attempt finished, or once the retry queue holds it, within the window.

        Handed off at once when the lane is full, after the window when no worker took it by then. An
        attempt still under way when the window ends goes on, and a guard on the retry queue stands for
        it (see :meth:`Deliverer.guard`). If the hand-off or the guard cannot be recorded this raises and
        the delivery stays unfinished (the caller submits it again; its message is not committed).
        """
        if len(self._waiting) >= self._size:
            await self._deliverer.defer(app, event, headers)
            return
        job = _Job(app, event, headers, asyncio.get_running_loop().create_future())
        window = self.window()
        self._waiting[job] = None
        self._start_waiting()
        try:
            await asyncio.wait({job.done, self._cut}, timeout=window, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._waiting.pop(job, None)
            raise
        if job in self._waiting:  # no worker took it within the window: hand it off instead
            del self._waiting[job]
            await self._deliverer.defer(app, event, headers)
        elif job.done.done() or job.posted or job.started is None:
            await job.done  # only its recording is left: the broker is slow or away, commits wait anyway
        else:  # the POST is still under way: a guard stands for it, and the attempt voids it when it ends
            job.guard_id = "grd_" + secrets.token_hex(8)
            await self._deliverer.guard(
                app,
                event,
                guard_id=job.guard_id,
                started=job.started,
                headers=headers,
            )

    def window(self) -> float:
        """How long a job submitted now may hold its message: the first-attempt window while the app
        delivers, the failing window once its last attempt failed or its workers have all been busy for a
        whole window."""
        if self._failing:
            return self._failing_window
        stuck_since = self._saturated_at
        if stuck_since is not None and asyncio.get_running_loop().time() - stuck_since >= self._window:
            return self._failing_window
        return self._window

    def hurry(self) -> None:
        """End the window of every job submitted so far: each waiting one is handed to the retry queue and
        each attempt under way is covered by its guard, now."""
        cut, self._cut = self._cut, asyncio.get_running_loop().create_future()
        cut.set_result(None)

    def _start_waiting(self) -> None:
        """Give waiting jobs, oldest first, to free workers."""
        while self._waiting and len(self._running) < self._workers and not self._closed:
            job = next(iter(self._waiting))
            del self._waiting[job]
            job.started = self._deliverer.now()
            task = asyncio.get_running_loop().create_task(self._attempt(job))
            self._running[task] = job
            task.add_done_callback(self._finished)
        if len(self._running) >= self._workers and self._saturated_at is None:
            self._saturated_at = asyncio.get_running_loop().time()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._saturated_at = None
        self._start_waiting()

    async def _attempt(self, job: _Job) -> None:
        try:
            result = await self._deliverer.attempt(
                job.app, job.event, attempt=1, headers=job.headers, posted=job.mark_posted
            )
            self._failing = not result.ok
        except asyncio.CancelledError:  # closed mid-attempt: not committed, or its guard stands
            job.settle(RuntimeError("lane closed"))
            raise
        except Exception as exc:  # not recorded: the message must be re-read, or its guard stands
            log.exception("delivery to app %s could not be recorded", job.app.app_id)
            job.settle(exc)
        else:
            job.settle()
            if job.guard_id is not None:
                await self._deliverer.clear_guard(job.app, job.guard_id)

    def close(self) -> None:
        """Stop the attempts under way; they and the waiting jobs fail (their messages are not committed
        and come back)."""
        self._closed = True
        for task, job in list(self._running.items()):
            task.cancel()
            job.settle(RuntimeError("lane closed"))  # a task cancelled before it ran settles nothing
        waiting, self._waiting = list(self._waiting), {}
        for job in waiting:
            job.settle(RuntimeError("lane closed"))


class Lanes:
    """A lane per app, created on first use, closed when the app stops receiving."""

    def __init__(self, deliverer: Deliverer, settings: Settings) -> None:
        self._deliverer = deliverer
        self._settings = settings
        self._lanes: dict[str, Lane] = {}
        self._closed = False

    def lane(self, app_id: str) -> Lane:
        """The app's lane (RuntimeError once closed: the job's message stays uncommitted)."""
        if self._closed:
            raise RuntimeError("lanes closed")
        lane = self._lanes.get(app_id)
        if lane is None:
            lane = self._lanes[app_id] = Lane(
                self._deliverer,
                size=self._settings.per_app_queue,
                workers=self._settings.per_app_concurrency,
                window=self._settings.first_attempt_window_seconds,
                failing_window=self._settings.failing_window_seconds,
            )
        return lane

    def hurry(self) -> None:
        """End every lane's windows now (see :meth:`Lane.hurry`)."""
        for lane in self._lanes.values():
            lane.hurry()

    async def submit(self, app: App, event: SmsInbound, headers: Headers = ()) -> None:
        """A first attempt on the app's lane (see :meth:`Lane.submit`)."""
        await self.lane(app.app_id).submit(app, event, headers)

    async def defer(self, app: App, event: SmsInbound, headers: Headers = ()) -> None:
        """A first attempt straight to the retry queue, due now (its tenant holds its share already)."""
        if self._closed:
            raise RuntimeError("lanes closed")
        await self._deliverer.defer(app, event, headers)

    def drop(self, app_id: str) -> None:
        """The app was removed, lost its URL or was disabled."""
        lane = self._lanes.pop(app_id, None)
        if lane is not None:
            lane.close()

    def close(self) -> None:
        """Close every lane."""
        self._closed = True
        for app_id in list(self._lanes):
            self.drop(app_id)
