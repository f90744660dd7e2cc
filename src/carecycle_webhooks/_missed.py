"""Done marks that the idempotency store failed to record after the handlers succeeded.

Such a delivery is answered 2xx (it was handled: Svix must not retry it). The flow tries
the mark again within the request for a few seconds (`RETRY_DELAYS`); a mark still
missed after that is kept here, bounded, and every later delivery of the dispatcher
records the kept marks first. Nothing runs in the background: until that next delivery,
the lease keeps duplicates out (409); see "When things fail" in docs/idempotency.md for
the window that remains.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import datetime
    from collections.abc import Generator, Sequence

    from ._idempotency import (
        AsyncIdempotencyStore,
        AsyncOrderedIdempotencyStore,
        IdempotencyStore,
        Order,
        OrderedIdempotencyStore,
    )

    # A mark: the lease's token, and the customer's order when the dispatcher keeps it.
    _Mark = tuple[str, Order | None]

__all__ = ["MAX_MISSED", "MissedDoneMarks"]

logger = logging.getLogger("carecycle_webhooks")

MAX_MISSED = 10_000
"""At most this many missed marks wait for the store; past it, the oldest are dropped."""


class MissedDoneMarks:
    """The missed done marks of one dispatcher (store key -> lease token and order), bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Oldest first. Read without the lock by every delivery (`if missed.marks:`).
        self.marks: collections.OrderedDict[str, _Mark] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self.marks)

    def add(self, key: str, token: str, order: Order | None = None) -> None:
        """Keep a mark that `IdempotencyStore.complete` failed to record."""
        with self._lock:
            self.marks[key] = (token, order)
            self._trim()

    def _take(self) -> list[tuple[str, _Mark]]:
        with self._lock:
            pending = list(self.marks.items())
            self.marks.clear()
        return pending

    def _finish(self, unrecorded: Sequence[tuple[str, _Mark]]) -> None:
        """Put back what a recording taken out by `_take` did not record."""
        with self._lock:
            marks = self.marks
            for key, mark in reversed(unrecorded):  # older than any added meanwhile
                if key not in marks:  # else missed again meanwhile: the newer lease counts
                    marks[key] = mark
                    marks.move_to_end(key, last=False)
            self._trim()

    def _trim(self) -> None:
        while len(self.marks) > MAX_MISSED:
            self.marks.popitem(last=False)

    def record(self, store: IdempotencyStore, ttl: datetime.timedelta) -> None:
        """Record the missed marks now; on a failure, keep the rest for the next delivery."""
        with contextlib.suppress(Exception), contextlib.closing(self._recording()) as marks:
            for key, (token, order) in marks:
                if order is None:
                    store.complete(key, token, ttl=ttl)
                else:  # only a store that keeps order had one
                    cast("OrderedIdempotencyStore", store).complete(key, token, ttl=ttl, order=order)

    async def record_async(self, store: AsyncIdempotencyStore, ttl: datetime.timedelta) -> None:
        """`record`, on the event loop."""
        with contextlib.suppress(Exception), contextlib.closing(self._recording()) as marks:
            for key, (token, order) in marks:
                if order is None:
                    await store.complete_async(key, token, ttl=ttl)
                else:
                    await cast("AsyncOrderedIdempotencyStore", store).complete_async(
                        key, token, ttl=ttl, order=order
                    )

    def _recording(self) -> Generator[tuple[str, _Mark], None, None]:
        """The marks to record, one by one. Asking for the next says the last one is recorded.

        A failure, a cancellation or an interruption closes this generator: the marks not
        recorded yet stay for the next delivery.
        """
        pending = self._take()
        recorded = 0
        try:
            for key, mark in pending:
                yield key, mark
                recorded += 1
                logger.info("webhook %s: its done mark is recorded now", key)
        finally:
            self._finish(pending[recorded:])
