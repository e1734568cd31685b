"""Per-app lanes: each app's first attempts have their own bounded queue and workers.

A slow, hanging, refusing or failing endpoint fills only its own lane. When a lane is full the job is
handed to the retry queue, due now, instead of waiting, so neither other apps nor the reading of later
messages are held up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gravity_events.models import SmsInbound
from gravity_fanout.apps import App
from gravity_fanout.handlers import Deliverer
from gravity_fanout.settings import Settings

__all__ = ["Lane", "Lanes"]

log = logging.getLogger(__name__)


@dataclass
class _Job:
    app: App
    event: SmsInbound
    done: asyncio.Future[None]

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

    def __init__(self, deliverer: Deliverer, *, size: int, workers: int) -> None:
        self._deliverer = deliverer
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=size)
        self._workers = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def submit(self, app: App, event: SmsInbound) -> None:
        """Return when the first attempt finished, or at once after deferring it if the lane is full."""
        job = _Job(app, event, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            await self._deliverer.defer(app, event)
            return
        await job.done

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._deliverer.attempt(job.app, job.event, attempt=1)
            except asyncio.CancelledError:  # closed mid-attempt: the message is not committed
                job.settle(RuntimeError("lane closed"))
                raise
            except Exception as exc:  # the attempt could not be recorded: the message must be re-read
                log.exception("delivery to app %s could not be recorded", job.app.app_id)
                job.settle(exc)
            else:
                job.settle()

    def close(self) -> None:
        """Stop the workers; queued jobs fail (their messages are not committed and come back)."""
        for task in self._workers:
            task.cancel()
        while not self._queue.empty():
            self._queue.get_nowait().settle(RuntimeError("lane closed"))


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
            )
        return lane

    async def submit(self, app: App, event: SmsInbound) -> None:
        """A first attempt on the app's lane (see :meth:`Lane.submit`)."""
        await self.lane(app.app_id).submit(app, event)

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
