"""Done marks that the idempotency store failed to record after the handlers succeeded.

Such a delivery is answered 2xx (it was handled: Svix must not retry it), and its lease
still keeps duplicates out, but only until it expires. So the mark is recorded as soon as
the store answers again, not only when this worker happens to receive its next
delivery: a background thread (after `Dispatcher.dispatch`) or task on the event loop
(after `Dispatcher.dispatch_async`) retries, a tenth of a second after the failure and
then at most a second apart, until every missed mark is recorded. Every delivery also
records the missed marks first, so that a duplicate arriving at this worker is answered
"duplicate" rather than "in flight".
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import threading
import time
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable, Sequence

    from ._idempotency import IdempotencyStore

__all__ = ["MissedDoneMarks"]

logger = logging.getLogger("carecycle_webhooks")

MAX_MISSED = 10_000
"""At most this many missed marks wait for the store; past it, the oldest are dropped."""

RETRY_FIRST = 0.1
"""Seconds from a failure to the first background retry; the wait then doubles..."""

RETRY_MAX = 1.0
"""...up to this: one attempt a second while the store stays down."""

_RETRIER_NAME = "carecycle-webhooks: missed done marks"

_Settings = tuple["IdempotencyStore | None", "datetime.timedelta"]


class MissedDoneMarks:
    """The missed done marks of one dispatcher (``webhook-id`` -> lease token), bounded.

    Args:
        settings: The dispatcher's store and ``done_ttl`` now, or ``None`` once the
            dispatcher is gone (the background retries then stop).
    """

    def __init__(self, settings: Callable[[], _Settings | None]) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        # Oldest first. Read without the lock by every delivery (`if missed.marks:`).
        self.marks: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._recording = 0  # record/record_async calls holding marks taken out
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # at most one per event loop

    def __len__(self) -> int:
        return len(self.marks)

    def add(self, webhook_id: str, token: str) -> None:
        """Keep a mark that `IdempotencyStore.complete` failed to record."""
        with self._lock:
            self.marks[webhook_id] = token
            self._trim()

    def _take(self) -> list[tuple[str, str]]:
        with self._lock:
            pending = list(self.marks.items())
            self.marks.clear()
            self._recording += 1
        return pending

    def _finish(self, unrecorded: Sequence[tuple[str, str]]) -> None:
        """Put back what a recording taken out by `_take` did not record."""
        with self._lock:
            self._recording -= 1
            marks = self.marks
            for webhook_id, token in reversed(unrecorded):  # older than any added meanwhile
                if webhook_id not in marks:  # else missed again meanwhile: the newer lease counts
                    marks[webhook_id] = token
                    marks.move_to_end(webhook_id, last=False)
            self._trim()

    def _trim(self) -> None:
        while len(self.marks) > MAX_MISSED:
            self.marks.popitem(last=False)

    # ------------------------------------------------------------------ synchronous

    def record(self, store: IdempotencyStore, ttl: datetime.timedelta) -> None:
        """Record the missed marks now; on a failure, keep the rest and retry in a thread."""
        pending = self._take()
        recorded = 0
        try:
            for webhook_id, token in pending:
                store.complete(webhook_id, token, ttl=ttl)
                recorded += 1
                logger.info("webhook %s: its done mark is recorded now", webhook_id)
        except Exception:  # noqa: BLE001 - the store is still down: retried later
            self.retry_in_thread()  # no retrier stops while this recording is unfinished
        finally:  # interrupted too: the rest stays for the retrier or the next delivery
            self._finish(pending[recorded:])

    def retry_in_thread(self) -> None:
        """Start the background thread that records the missed marks, unless it runs."""
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._retry_loop, name=_RETRIER_NAME, daemon=True)
            self._thread = thread
        try:
            thread.start()
        except RuntimeError as error:  # no thread to be had: the next delivery records them
            with self._lock:
                self._thread = None
            logger.warning("cannot start the thread that records missed done marks: %s", error)

    def _retry_loop(self) -> None:
        me = threading.current_thread()
        delay = RETRY_FIRST
        try:
            while True:
                time.sleep(delay)
                settings = self._round(me)
                if settings is None:
                    return
                self.record(*settings)
                delay = min(2 * delay, RETRY_MAX)
        finally:
            self._retire(me)

    def _round(
        self, retrier: threading.Thread | asyncio.Task[None]
    ) -> tuple[IdempotencyStore, datetime.timedelta] | None:
        # Under the lock that `add` and the retry_* methods take: a mark added while this
        # retrier stops is either seen here or starts a new retrier.
        with self._lock:
            settings = self._settings()  # None once the dispatcher is gone
            # A delivery recording now may still put marks back: wait for it.
            if settings is not None and settings[0] is not None and (self.marks or self._recording):
                return settings[0], settings[1]
            self._retire_locked(retrier)
            return None

    def _retire(self, retrier: threading.Thread | asyncio.Task[None]) -> None:
        with self._lock:
            self._retire_locked(retrier)

    def _retire_locked(self, retrier: threading.Thread | asyncio.Task[None]) -> None:
        if retrier is self._thread:
            self._thread = None
        elif isinstance(retrier, asyncio.Task):
            self._tasks.discard(retrier)

    # ------------------------------------------------------------------ asyncio

    async def record_async(self, store: IdempotencyStore, ttl: datetime.timedelta) -> None:
        """`record`, on the event loop; on a failure, a task on this loop retries."""
        pending = self._take()
        recorded = 0
        try:
            for webhook_id, token in pending:
                await store.complete_async(webhook_id, token, ttl=ttl)
                recorded += 1
                logger.info("webhook %s: its done mark is recorded now", webhook_id)
        except Exception:  # noqa: BLE001 - the store is still down: retried later
            self.retry_in_task()  # no retrier stops while this recording is unfinished
        finally:  # cancelled too: the rest stays for the retrier or the next delivery
            self._finish(pending[recorded:])

    def retry_in_task(self) -> None:
        """Start a task on the running loop that records the missed marks, unless one runs."""
        loop = asyncio.get_running_loop()
        with self._lock:
            # Forget the tasks of loops closed without cancelling them: they never run again.
            self._tasks = {task for task in self._tasks if not task.get_loop().is_closed()}
            if any(task.get_loop() is loop for task in self._tasks):
                return
            # In a context of its own, not the failed request's (its logging and tracing ids).
            task = contextvars.Context().run(loop.create_task, self._retry_loop_async(), name=_RETRIER_NAME)
            self._tasks.add(task)  # the loop only keeps a weak reference to its tasks

    async def _retry_loop_async(self) -> None:
        me = cast("asyncio.Task[None]", asyncio.current_task())
        delay = RETRY_FIRST
        try:
            while True:
                await asyncio.sleep(delay)
                settings = self._round(me)
                if settings is None:
                    return
                await self.record_async(*settings)
                delay = min(2 * delay, RETRY_MAX)
        finally:  # also when the loop shuts down and cancels it
            self._retire(me)
