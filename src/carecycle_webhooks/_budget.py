"""How many bytes of request bodies the framework adapters may hold in memory at once.

Bodies are read before their signature can be checked, so anyone who can reach the
endpoint can make it read: 1,000 concurrent 10 MiB bodies would be 10 GB. So every piece
of a body is taken from this budget as it arrives, and given back when the delivery is
answered. A delivery whose declared ``Content-Length`` does not fit in what is left is
answered 503 with ``Retry-After`` before anything is read, and one whose next piece does
not fit is answered 503 as soon as it arrives: Svix retries it. A client that declares a
large body and then sends nothing holds nothing.
"""

from __future__ import annotations

import logging
import threading

from ._logs import Throttle
from ._responses import BUSY, WebhookResponse

__all__ = ["DEFAULT_BODY_BUDGET", "BodyBudget", "Reservation", "process_budget"]

logger = logging.getLogger("carecycle_webhooks")

DEFAULT_BODY_BUDGET = 32 * 1024 * 1024
"""Bytes of request bodies one dispatcher's endpoints buffer at once, at most (32 MiB).

Three bodies of the largest default size, or hundreds of ordinary deliveries (a few KiB
to a few hundred KiB each). Reading, verifying and parsing a body takes about three times
its size at the peak, so this bounds a worker's memory for bodies near 100 MiB.
"""

# Refusals are logged at most this often: under a flood, one line with a count.
_WARN_EVERY = 10.0


class BodyBudget:
    """A thread-safe count of the body bytes being held, against a limit.

    Args:
        limit: The most bytes held at once.
    """

    __slots__ = ("_lock", "_refused", "_used", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        self._refused = Throttle(_WARN_EVERY)  # refusals, and when to log them

    @property
    def used(self) -> int:
        """The bytes taken now."""
        return self._used

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes fit now (nothing is taken); counts a refusal if not."""
        if self._used + size <= self.limit:
            return True
        self._refused.note()
        return False

    def take(self, size: int) -> bool:
        """Take ``size`` bytes if they fit; ``False`` (and nothing taken) if not."""
        with self._lock:
            if self._used + size > self.limit:
                self._refused.note()
                return False
            self._used += size
            return True

    def give_back(self, size: int) -> None:
        """Return bytes taken by `take`."""
        with self._lock:
            self._used -= size

    def refuse(self) -> WebhookResponse:
        """The 503 answer for a delivery that did not fit, logged at most every ten seconds."""
        refused = self._refused.due()
        if refused is not None:
            logger.warning(
                "%d deliveries answered 503: the body budget (%d bytes) is in use by the "
                "bodies being read; Svix retries them (raise Dispatcher(body_budget=...) "
                "if this is ordinary traffic)",
                refused,
                self.limit,
            )
        return BUSY


class Reservation:
    """The bytes one delivery took from a budget, all given back by `close`."""

    __slots__ = ("_budget", "taken")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.taken = 0

    def take(self, size: int) -> bool:
        """Take ``size`` more bytes for this delivery, if they fit."""
        if self._budget.take(size):
            self.taken += size
            return True
        return False

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes fit in the budget now (nothing is taken)."""
        return self._budget.fits(size)

    def give_back(self, size: int) -> None:
        """Give back ``size`` of the bytes taken (a read returned less than was taken for it)."""
        size = min(size, self.taken)
        if size > 0:
            self.taken -= size
            self._budget.give_back(size)

    def refuse(self) -> WebhookResponse:
        """The 503 answer for a delivery that did not fit (see `BodyBudget.refuse`)."""
        return self._budget.refuse()

    def close(self) -> None:
        """Give every byte taken back."""
        taken, self.taken = self.taken, 0
        if taken:
            self._budget.give_back(taken)


_process_budget: BodyBudget | None = None
_process_budget_lock = threading.Lock()


def process_budget() -> BodyBudget:
    """The budget of `DEFAULT_BODY_BUDGET` bytes that dispatchers with the default share.

    One per process: a worker forked after it was made gets a copy of its own.
    """
    global _process_budget  # noqa: PLW0603 - made on first use, then shared
    with _process_budget_lock:
        if _process_budget is None:
            _process_budget = BodyBudget(DEFAULT_BODY_BUDGET)
        return _process_budget
